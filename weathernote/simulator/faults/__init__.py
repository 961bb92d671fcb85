"""What can go wrong, on purpose: Open-Meteo's error answers and rate limits, injected faults,
well-formed but wrong bodies, huge and trickled deliveries."""
