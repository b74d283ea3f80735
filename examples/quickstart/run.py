"""Build the quickstart features and pull a point-in-time training set.

Run from this directory: python run.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from definitions import defs  # noqa: E402


def main() -> int:
    result = defs.build()
    for f in result.features:
        print(f"{f.name:<24} {f.status:<8} version={f.version} rows={f.rows} time={f.seconds}s {f.reason or ''}")
        if f.error:
            print(f"  error: {f.error}")
    table = defs.read_feature("user_spend").order_by(["user_id", "event_time"]).limit(5).to_pandas()
    print(table.to_string(index=False))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
