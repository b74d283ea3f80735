"""Features for predicting a flight's arrival delay, from what was known before it left.

Delay features are built on `arrived_at` (when a flight's arrival delay became known),
so the row labelled `t` only aggregates flights that had landed before `t` (contract W1).
"""

import mlforge as mlf

flights = mlf.Source("data/flights.parquet")
weather = mlf.Source("data/weather.parquet")

carrier = mlf.Entity(name="carrier", join_key="carrier")
route = mlf.Entity(name="route", join_key="route_id", from_columns=["origin", "dest"])
aircraft = mlf.Entity(name="aircraft", join_key="tailnum")
airport = mlf.Entity(name="airport", join_key="origin")


def landed(t):
    """Flights that landed, with a 0/1 'more than 15 minutes late' column."""
    t = t.filter(t.arr_delay.notnull())
    return t.mutate(late=(t.arr_delay > 15).cast("float64"))


@mlf.feature(
    source=flights,
    entities=[carrier],
    timestamp="arrived_at",
    interval="1d",
    metrics=[
        mlf.Mean(mlf.Field("arr_delay", description="arrival delay", unit="min"), windows=["7d", "28d"], name="carrier_arr_delay"),
        mlf.Mean("late", windows=["28d"], name="carrier_late_rate"),
        mlf.Count("arr_delay", windows=["7d"], name="carrier_flights"),
    ],
    tags=["carriers", "daily"],
    description="Recent arrival delays of each airline.",
)
def carrier_delays(t):
    return landed(t).select("carrier", "arrived_at", "arr_delay", "late")


@mlf.feature(
    source=flights,
    entities=[route],
    timestamp="arrived_at",
    interval="1d",
    metrics=[
        mlf.Mean("arr_delay", windows=["28d"], name="route_arr_delay", unit="min"),
        mlf.Std("arr_delay", windows=["28d"], name="route_arr_delay_std", unit="min"),
        mlf.Median("air_time", windows=["28d"], name="route_air_time", unit="min"),
    ],
    tags=["routes", "daily"],
    description="Delays and air time per origin-destination pair (a surrogate key).",
)
def route_delays(t):
    return landed(t).select("route_id", "origin", "dest", "arrived_at", "arr_delay", "air_time")


@mlf.feature(
    source=flights,
    entities=[aircraft],
    timestamp="arrived_at",
    interval="1h",
    metrics=[
        mlf.Mean("arr_delay", windows=["4h", "12h"], name="aircraft_arr_delay", unit="min"),
        mlf.Count("arr_delay", windows=["12h"], name="aircraft_legs"),
    ],
    tags=["aircraft", "hourly"],
    description="Delays of the aircraft's previous legs: delays propagate along a plane's day.",
)
def aircraft_delays(t):
    t = landed(t)
    return t.filter(t.tailnum.notnull()).select("tailnum", "arrived_at", "arr_delay")


@mlf.feature(
    source=flights,
    entities=[airport],
    timestamp="departed_at",
    interval="1h",
    metrics=[
        mlf.Mean("dep_delay", windows=["2h", "6h"], name="airport_dep_delay", unit="min"),
        mlf.Count("dep_delay", windows=["2h"], name="airport_departures"),
    ],
    tags=["airports", "hourly"],
    description="Departure delays at the origin airport in the last hours (congestion).",
)
def airport_delays(t):
    t = t.filter(t.departed_at.notnull())
    return t.select("origin", "departed_at", "dep_delay")


@mlf.feature(source=weather, entities=[airport], timestamp="observed_at", tags=["weather", "hourly"], description="The latest hourly weather observation at the departure airport.")
def airport_weather(t):
    return t.select("origin", "observed_at", "temp", "wind_speed", "wind_gust", "precip", "visib")


# The features the arrival-delay model is trained on and served with: one list, declared once.
delay_features = mlf.FeatureSet(
    "delay_features",
    features=[carrier_delays, route_delays, aircraft_delays, airport_delays, airport_weather],
    description="What is known about a flight's carrier, route, aircraft and airport before it leaves.",
)
