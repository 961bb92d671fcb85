"""What the simulator answers: a deterministic, plausible weather per place and time, on a pseudo
model grid, in Open-Meteo's variables, units, number spellings and time zones."""
