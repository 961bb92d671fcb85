// weathernote/cells.py's Grid(0.1), to the bit: which cell a point belongs to and its entry key.
import { createGraphQLError } from "graphql-yoga";

function badInput(message) {
  return createGraphQLError(message, { extensions: { code: "BAD_USER_INPUT" } });
}

function validate(name, value, bound) {
  if (!Number.isFinite(value)) throw badInput(`${name} must be a finite number`);
  if (value < -bound || value > bound) throw badInput(`${name} must be between -${bound} and ${bound}, got ${value}`);
}

// Python's round(): to the nearest integer, ties to even (on the exact double).
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

// The cell's coordinate in tenths of a degree. WeatherNote snaps with round(value / 0.1) * 0.1 and
// prints that double to one decimal; the double is within an ulp of tenths / 10, so the printed
// text is always tenths / 10: the integer carries the whole cell.
function tenths(value) {
  return roundHalfEven(value / 0.1);
}

function text(tenthsValue) {
  if (tenthsValue === 0) return "0.0"; // -0.0 and 0.0 are the same cell; keys never carry the sign
  const sign = tenthsValue < 0 ? "-" : "";
  const magnitude = Math.abs(tenthsValue);
  return `${sign}${Math.floor(magnitude / 10)}.${magnitude % 10}`;
}

export function cellOf(lat, lon) {
  validate("lat", lat, 90);
  validate("lon", lon, 180);
  const latTenths = tenths(lat);
  let lonTenths = tenths(lon);
  if (lonTenths * 0.1 >= 180 - 0.1 / 2) lonTenths = -1800; // the antimeridian is one line: 180 is -180
  const latText = text(latTenths);
  const lonText = text(lonTenths);
  return { lat: Number(latText), lon: Number(lonText), key: `weather:lat:${latText}:lon:${lonText}` };
}
