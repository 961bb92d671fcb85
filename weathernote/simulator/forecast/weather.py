"""A deterministic, plausible weather model: same grid cell, time step and seed, same weather.

Each cell has a sea-level `_Base` state at any 15-minute instant, built from a
climate normal (latitude and season), a diurnal cycle and smooth space-time
value noise. `WeatherModel` turns it into `Conditions` at a site: temperature
downscaled to the site's elevation, precipitation split into rain, showers and
snow by temperature, a WMO code consistent with both, and the sun's position.
Hourly values describe the instant (or, for sums and means, the hour ending
then); `current` interpolates the instant fields between the enclosing hours.
"""

from __future__ import annotations

import calendar
import itertools
import math
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import NamedTuple

from weathernote.simulator.forecast.grid import GridCell
from weathernote.simulator.forecast.noise import value_noise

HOUR = 3600
DAY = 86400
LAPSE_RATE = 0.0065  # K per metre
_YEAR_DAYS = 365.2422
_WARMEST_DAY = 200.0  # days after 1 January (about 20 July in the north)
_SUN_ALTITUDE_AT_RISE = math.radians(-0.833)  # refraction and the sun's radius
_SIN_RISE = math.sin(_SUN_ALTITUDE_AT_RISE)
_CLEAR_VISIBILITY = 24140.0  # 15 miles: what the server prints in clear air
_SNOW_CM_PER_MM = 0.7

# Piecewise-linear climate by absolute latitude: annual mean (°C), seasonal
# half-range (K), and a wetness offset for the moisture driver (deserts near 25°).
_MEAN_TEMPERATURE = ((0, 26.5), (15, 25.5), (30, 19.5), (45, 11.5), (55, 8.0), (65, 1.0), (75, -11.0), (90, -22.0))
_SEASONAL_RANGE = ((0, 0.8), (15, 3.0), (30, 7.0), (45, 10.5), (55, 10.0), (65, 11.0), (75, 14.0), (90, 17.0))
_WETNESS = (
    (0, 0.10),
    (10, 0.06),
    (20, -0.08),
    (28, -0.14),
    (38, -0.02),
    (50, 0.04),
    (65, 0.02),
    (80, -0.06),
    (90, -0.10),
)


class _Channel(NamedTuple):
    period_seconds: int  # time between independent noise fields
    lattice_degrees: float  # spatial scale; divides 360 so longitude wraps


_TEMPERATURE_SLOW, _TEMPERATURE_FAST, _MOISTURE_SLOW, _MOISTURE_FAST = 0, 1, 2, 3
_CONVECTION, _WIND, _DIRECTION_SLOW, _DIRECTION_FAST, _PRESSURE, _GROUND = 4, 5, 6, 7, 8, 9
_CHANNELS = (
    _Channel(96 * HOUR, 12.0),
    _Channel(30 * HOUR, 5.0),
    _Channel(40 * HOUR, 9.0),
    _Channel(9 * HOUR, 2.5),
    _Channel(5 * HOUR, 1.5),
    _Channel(14 * HOUR, 6.0),
    _Channel(60 * HOUR, 18.0),
    _Channel(16 * HOUR, 6.0),
    _Channel(70 * HOUR, 15.0),
    _Channel(240 * HOUR, 10.0),
)


@dataclass(frozen=True, slots=True)
class Site:
    """A place on the model grid: its cell and height."""

    cell: GridCell
    elevation: float  # metres; temperatures are downscaled to it


@dataclass(frozen=True, slots=True)
class SunTimes:
    """A local day's sunrise and sunset."""

    sunrise: float | None  # unix seconds rounded to the minute; None during polar day or night
    sunset: float | None
    daylight_seconds: float


@dataclass(frozen=True, slots=True)
class Conditions:
    """Weather at one instant, in the server's default units. Sums cover the preceding `interval`."""

    temperature: float  # °C
    mean_temperature: float  # °C, without the diurnal cycle (drives the upper soil)
    climate_temperature: float  # °C, the seasonal normal (drives the deep soil and snow cover)
    relative_humidity: float  # %
    dew_point: float  # °C
    apparent_temperature: float  # °C
    is_day: int
    precipitation: float  # mm
    rain: float  # mm
    showers: float  # mm
    snowfall: float  # cm
    precipitation_probability: float  # %
    weather_code: int
    cloud_cover: float  # %
    cloud_cover_low: float
    cloud_cover_mid: float
    cloud_cover_high: float
    pressure_msl: float  # hPa
    surface_pressure: float  # hPa
    wind_speed: float  # km/h at 10 m
    wind_direction: float  # °
    wind_gusts: float  # km/h
    visibility: float  # m
    uv_index: float
    uv_index_clear_sky: float
    shortwave_radiation: float  # W/m², mean over the interval
    direct_radiation: float
    diffuse_radiation: float
    sunshine_duration: float  # s
    et0_evapotranspiration: float  # mm
    cape: float  # J/kg
    freezing_level_height: float  # m
    snow_depth: float  # m
    soil_wetness: float  # 0..1


class _Base(NamedTuple):
    """Sea-level state of a cell at one instant; the last three fields describe the hour ending then."""

    temperature: float
    mean_temperature: float
    climate_temperature: float
    dewpoint_depression: float
    cloud: float  # 0..1
    wind: float
    gust_factor: float
    direction: float  # unwrapped degrees, so interpolation never swings through north the long way
    pressure: float
    convection: float  # 0..1
    ground_wetness: float  # 0..1
    precipitation: float  # mm in the hour ending at this instant
    convective_share: float  # part of it that fell as showers
    probability: float  # %


_INSTANT_FIELDS = _Base._fields.index("precipitation")


class WeatherModel:
    """Deterministic weather: the same cell, step and seed give the same conditions."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def hour(self, site: Site, unix_seconds: int) -> Conditions:
        """Conditions at a whole hour; sums are for the hour ending then."""
        base = _base(self.seed, site.cell.latitude, site.cell.longitude, unix_seconds)
        return _conditions(site, unix_seconds, base, HOUR)

    def current(self, site: Site, unix_seconds: int, interval: int) -> Conditions:
        """Conditions at a 15-minute step, interpolated between the hours around it."""
        start = unix_seconds - unix_seconds % HOUR
        fraction = (unix_seconds - start) / HOUR
        lat, lon = site.cell.latitude, site.cell.longitude
        before = _base(self.seed, lat, lon, start)
        if fraction == 0:
            return _conditions(site, unix_seconds, before, interval)
        after = _base(self.seed, lat, lon, start + HOUR)
        instant = [a + (b - a) * fraction for a, b in zip(before[:_INSTANT_FIELDS], after[:_INSTANT_FIELDS])]
        # The step lies in the hour ending at `start + HOUR`: its precipitation is a share of that hour's.
        mixed = _Base(*instant, *after[_INSTANT_FIELDS:])
        return _conditions(site, unix_seconds, mixed, interval)

    def sun(self, site: Site, local_day: int) -> SunTimes:
        """Sunrise and sunset on a calendar day (days since 1970-01-01 in local time)."""
        return _sun_times(site.cell.latitude, site.cell.longitude, local_day)


def _conditions(site: Site, t: int, base: _Base, interval: int) -> Conditions:
    elevation = site.elevation
    lat = site.cell.latitude
    cooling = LAPSE_RATE * elevation
    temperature = base.temperature - cooling
    rate = base.precipitation  # mm per hour, decides the weather code
    share = interval / HOUR
    cloud = base.cloud
    depression = base.dewpoint_depression
    if rate > 0:
        cloud = max(cloud, 0.55 + 0.35 * (1 - base.convective_share))
        depression = min(depression, 0.4 + 0.6 / (1 + rate))
    dew_point = temperature - depression
    vapour = saturation_vapour_pressure(dew_point)  # the actual vapour pressure, hPa
    humidity = min(100.0, 100.0 * vapour / saturation_vapour_pressure(temperature))

    snow_fraction = _clamp((1.0 - temperature) / 2.0, 0.0, 1.0)
    liquid = rate * (1 - snow_fraction) * share
    solid = rate * snow_fraction * share  # mm of water
    showers = liquid * base.convective_share

    sin_now = _sin_sun_altitude(lat, site.cell.longitude, t)
    sin_mid = _sin_sun_altitude(lat, site.cell.longitude, t - interval // 2)
    uv_clear = 11.5 * max(0.0, sin_now) ** 2.5
    clear_sky = 1098.0 * sin_mid * math.exp(-0.057 / sin_mid) if sin_mid > 0.01 else 0.0
    shortwave = clear_sky * (1 - 0.75 * cloud**3.4)
    direct = shortwave * 0.85 * (1 - cloud) ** 1.2
    sunshine = interval * min(1.0, sin_mid * 10) * (1 - cloud) ** 1.4 if sin_mid > 0 else 0.0

    wind = base.wind
    is_fog = rate == 0 and humidity >= 97 and wind < 12
    if is_fog:
        visibility = 150.0 + 700.0 * (100 - humidity) / 3
    elif rate > 0:
        visibility = max(800.0, _CLEAR_VISIBILITY * math.exp(-rate / 3))
    elif humidity > 90:
        visibility = _CLEAR_VISIBILITY * (1 - (humidity - 90) / 12)
    else:
        visibility = _CLEAR_VISIBILITY

    pressure = base.pressure
    et0 = 0.00075 * shortwave * (0.6 + 0.4 * (1 - humidity / 100)) * (1 + max(0.0, temperature) / 40) * share
    # Steadman's apparent temperature with a small term for sunshine on the skin.
    apparent = temperature + 0.33 * vapour - 0.70 * wind / 3.6 - 4.0 + 0.0035 * shortwave
    return Conditions(
        temperature=temperature,
        mean_temperature=base.mean_temperature - cooling,
        climate_temperature=base.climate_temperature - cooling,
        relative_humidity=humidity,
        dew_point=dew_point,
        apparent_temperature=apparent,
        is_day=1 if sin_now > _SIN_RISE else 0,
        precipitation=liquid + solid,
        rain=liquid - showers,
        showers=showers,
        snowfall=solid * _SNOW_CM_PER_MM,
        precipitation_probability=base.probability,
        weather_code=_weather_code(rate, base.convective_share, snow_fraction, temperature, cloud, is_fog),
        cloud_cover=100 * cloud,
        cloud_cover_low=100 * cloud * (0.35 + 0.6 * base.convection) if rate == 0 else 100 * cloud,
        cloud_cover_mid=100 * cloud * 0.7,
        cloud_cover_high=100 * min(1.0, cloud * (0.4 + 0.6 * base.ground_wetness)),
        pressure_msl=pressure,
        surface_pressure=pressure * (1 - LAPSE_RATE * elevation / 288.15) ** 5.255,
        wind_speed=wind,
        wind_direction=base.direction % 360,
        wind_gusts=wind * base.gust_factor + 6 * rate * base.convective_share,
        visibility=visibility,
        uv_index=uv_clear * (1 - 0.72 * cloud**2),
        uv_index_clear_sky=uv_clear,
        shortwave_radiation=shortwave,
        direct_radiation=direct,
        diffuse_radiation=shortwave - direct,
        sunshine_duration=sunshine,
        et0_evapotranspiration=et0,
        cape=max(0.0, (temperature - 8) * 95 * base.convection),
        freezing_level_height=max(0.0, elevation + temperature / LAPSE_RATE),
        snow_depth=_clamp((1.0 - (base.climate_temperature - cooling)) * 0.06, 0.0, 3.0),
        soil_wetness=base.ground_wetness,
    )


def _weather_code(
    rate: float, convective_share: float, snow_fraction: float, temperature: float, cloud: float, is_fog: bool
) -> int:
    """A WMO code (only the 28 the server knows) matching precipitation, temperature and cloud."""
    if rate > 0:
        snow = snow_fraction >= 0.5
        if convective_share >= 0.5:
            if snow:
                return 85 if rate < 2 else 86
            if rate >= 3 and temperature >= 15:
                return 95
            return 80 if rate < 1.5 else 81 if rate < 6 else 82
        if snow:
            return 71 if rate < 1 else 73 if rate < 2.5 else 75
        if rate < 0.5:
            return 51 if rate < 0.25 else 53 if rate < 0.35 else 55
        return 61 if rate < 2.5 else 63 if rate < 7.6 else 65
    if is_fog:
        return 48 if temperature < 0 else 45
    if cloud >= 0.85:
        return 3
    if cloud >= 0.5:
        return 2
    return 1 if cloud >= 0.2 else 0


@lru_cache(maxsize=1 << 16)
def _base(seed: int, lat: float, lon: float, t: int) -> _Base:
    abs_lat = abs(lat)
    climate = _climate(lat, t)
    variability = 0.35 + 0.65 * min(1.0, abs_lat / 45)
    anomaly = variability * (
        12 * (_channel(seed, _TEMPERATURE_SLOW, lat, lon, t) - 0.5)
        + 7 * (_channel(seed, _TEMPERATURE_FAST, lat, lon, t) - 0.5)
    )
    wetness = _latitude_climate(lat)[2]
    moisture = _moisture(seed, lat, lon, t, wetness)
    cloud = _clamp((moisture - 0.3) / 0.45, 0.0, 1.0)
    solar_hour = (t / HOUR + lon / 15) % 24
    # Warmest at 15:00 solar time; dry air and clear skies swing more.
    diurnal_range = (4.5 + 2.5 * (1 - moisture)) * (1 - 0.65 * cloud)
    diurnal = diurnal_range * math.cos(2 * math.pi * (solar_hour - 15) / 24)
    mean_temperature = climate + anomaly
    convection = _channel(seed, _CONVECTION, lat, lon, t)
    wind_driver = _channel(seed, _WIND, lat, lon, t)
    wind = (4 + 30 * wind_driver**1.8) * (0.7 + 0.5 * min(1.0, abs_lat / 50)) + 8 * max(0.0, moisture - 0.7)

    # The hour ending at t, judged at its middle.
    mid = t - HOUR // 2
    mid_moisture = _moisture(seed, lat, lon, mid, wetness)
    # Showers favour warm afternoons: solar heating adds to the convection driver.
    heating = 0.12 * math.cos(2 * math.pi * (solar_hour - 0.5 - 15) / 24)
    mid_convection = _channel(seed, _CONVECTION, lat, lon, mid) + heating
    warmth = _clamp((mean_temperature - 4) / 14, 0.0, 1.0)
    stratiform = 3.5 * (1 + wetness * 3) * (max(0.0, mid_moisture - 0.78) / 0.22) ** 1.8
    humid_enough = _clamp((mid_moisture - 0.45) / 0.2, 0.0, 1.0)
    convective = 9.0 * (max(0.0, mid_convection - 0.72) / 0.28) ** 1.5 * humid_enough * warmth
    precipitation = round(stratiform + convective, 1)
    share = convective / (stratiform + convective) if precipitation > 0 else 0.0
    probability = 100 * max(_clamp((mid_moisture - 0.58) / 0.24, 0.0, 1.0), min(1.0, 3 * convective))
    if precipitation > 0:
        probability = max(probability, 35.0)

    return _Base(
        temperature=mean_temperature + diurnal,
        mean_temperature=mean_temperature,
        climate_temperature=climate,
        dewpoint_depression=0.2 + 14 * (1 - moisture) ** 1.5 + 0.9 * max(0.0, diurnal),
        cloud=cloud,
        wind=wind,
        gust_factor=1.45 + 0.5 * convection,
        direction=720 * _channel(seed, _DIRECTION_SLOW, lat, lon, t)
        + 200 * _channel(seed, _DIRECTION_FAST, lat, lon, t),
        pressure=1013 + 34 * (_channel(seed, _PRESSURE, lat, lon, t) - 0.5) - 14 * (moisture - 0.5),
        convection=convection,
        ground_wetness=_clamp(0.5 * _channel(seed, _GROUND, lat, lon, t) + 0.5 * moisture, 0.0, 1.0),
        precipitation=precipitation,
        convective_share=share,
        probability=probability,
    )


def _moisture(seed: int, lat: float, lon: float, t: int, wetness: float) -> float:
    slow = _channel(seed, _MOISTURE_SLOW, lat, lon, t)
    mixed = 0.6 * slow + 0.4 * _channel(seed, _MOISTURE_FAST, lat, lon, t)
    # Stretched so that clear skies and overcast both occur often, as they do in reality.
    return _clamp(0.5 + 1.7 * (mixed - 0.5) + wetness, 0.0, 1.0)


def _climate(lat: float, t: int) -> float:
    """Seasonal normal temperature at sea level."""
    season = math.cos(2 * math.pi * ((t / DAY) % _YEAR_DAYS - _WARMEST_DAY) / _YEAR_DAYS)
    mean, seasonal_range, _ = _latitude_climate(lat)
    return mean + seasonal_range * (season if lat >= 0 else -season)


@lru_cache(maxsize=4096)
def _latitude_climate(lat: float) -> tuple[float, float, float]:
    """Annual mean temperature, seasonal half-range and wetness offset at a latitude."""
    abs_lat = abs(lat)
    return (
        _interpolate(_MEAN_TEMPERATURE, abs_lat),
        _interpolate(_SEASONAL_RANGE, abs_lat),
        _interpolate(_WETNESS, abs_lat),
    )


def _channel(seed: int, channel: int, lat: float, lon: float, t: int) -> float:
    """One noise channel at a cell, smooth in time between independent fields every period."""
    position = t / _CHANNELS[channel].period_seconds
    knot = math.floor(position)
    fraction = position - knot
    fraction = fraction * fraction * (3.0 - 2.0 * fraction)  # smoothstep, inlined: the hottest line
    first = _knot(seed, channel, lat, lon, knot)
    second = _knot(seed, channel, lat, lon, knot + 1)
    return first + (second - first) * fraction


@lru_cache(maxsize=1 << 17)
def _knot(seed: int, channel: int, lat: float, lon: float, knot: int) -> float:
    lattice = _CHANNELS[channel].lattice_degrees
    return value_noise((seed, channel, knot), lon / lattice, (lat + 90) / lattice, round(360 / lattice))


@lru_cache(maxsize=4096)
def _solar_day(day: int) -> tuple[float, float]:
    """Declination (radians) and equation of time (minutes) at noon of a day since 1970-01-01 (NOAA)."""
    when = date(1970, 1, 1) + timedelta(days=day)
    year_days = 366 if calendar.isleap(when.year) else 365
    gamma = 2 * math.pi / year_days * (when.timetuple().tm_yday - 0.5)
    declination = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    equation_of_time = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    return declination, equation_of_time


def _sin_sun_altitude(lat: float, lon: float, t: int) -> float:
    day, seconds = divmod(t, DAY)
    declination, equation_of_time = _solar_day(day)
    true_solar_minutes = seconds / 60 + equation_of_time + 4 * lon
    hour_angle = math.radians(true_solar_minutes / 4 - 180)
    phi = math.radians(lat)
    return math.sin(phi) * math.sin(declination) + (math.cos(phi) * math.cos(declination) * math.cos(hour_angle))


def _sun_times(lat: float, lon: float, day: int) -> SunTimes:
    declination, equation_of_time = _solar_day(day)
    phi = math.radians(lat)
    denominator = math.cos(phi) * math.cos(declination)
    numerator = _SIN_RISE - math.sin(phi) * math.sin(declination)
    if denominator <= 1e-9 or abs(numerator) >= denominator:
        # Polar day or night: the sun does not cross the horizon; the server's behaviour is unknown.
        up_all_day = math.sin(phi) * math.sin(declination) > _SIN_RISE
        return SunTimes(None, None, float(DAY) if up_all_day else 0.0)
    half_day_minutes = 4 * math.degrees(math.acos(numerator / denominator))
    noon_minutes = 720 - 4 * lon - equation_of_time
    sunrise = day * DAY + (noon_minutes - half_day_minutes) * 60
    sunset = day * DAY + (noon_minutes + half_day_minutes) * 60
    return SunTimes(round(sunrise / 60) * 60.0, round(sunset / 60) * 60.0, sunset - sunrise)


def saturation_vapour_pressure(celsius: float) -> float:
    """Saturation vapour pressure in hPa (Magnus)."""
    return 6.1094 * math.exp(17.625 * celsius / (celsius + 243.04))


def _interpolate(table: tuple[tuple[float, float], ...], x: float) -> float:
    for (x0, y0), (x1, y1) in itertools.pairwise(table):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return table[-1][1]


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value
