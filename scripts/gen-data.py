#!/usr/bin/env python3
"""Generates input data for the example tenants, deterministically.

  scripts/gen-data.py orders   --rows 1000 [--bad-every 97] [--seed 1] > orders.csv
  scripts/gen-data.py orders   --mb 100 > orders-100mb.csv
  scripts/gen-data.py readings --rows 1000 [--bad-every 89] > readings.ndjson

About one row in --bad-every is deliberately broken (the pipelines reject
those rows); --bad-every 0 makes every row valid.
"""
import argparse
import json
import random
import sys

COUNTRIES = ["FI", "SE", "NO", "DK", "DE", "FR", "NL", "EE", "GB", "US"]
CURRENCY = {"FI": "EUR", "DE": "EUR", "FR": "EUR", "NL": "EUR", "EE": "EUR", "SE": "SEK",
            "NO": "EUR", "DK": "EUR", "GB": "GBP", "US": "USD"}
PRODUCTS = [("SKU-1001", "Trail running shoes", "Footwear", 129.0), ("SKU-1002", "Rain jacket", "Outerwear", 189.5),
            ("SKU-1003", "Merino socks", "Accessories", 19.9), ("SKU-1004", "Headlamp", "Gear", 44.0),
            ("SKU-1005", "Thermos, 0.75 l", "Gear", 32.5), ("SKU-1006", "Down vest", "Outerwear", 149.0),
            ("SKU-1007", "Wool beanie", "Accessories", 24.0), ("SKU-1008", "Tent \"Nordic 2\"", "Gear", 399.0)]
NAMES = ["Aino Virtanen", "Mikko Korhonen", "Emma Lindqvist", "Lars Berg", "Sofie Jensen", "Jonas Weber",
         "Claire Martin", "Daan de Vries", "Kadri Tamm", "Oliver Smith", "Ava Johnson"]
SITES = ["helsinki", "oulu", "tampere", "rovaniemi", "turku"]
HEADER = "order_id,order_date,customer_id,customer_name,country,sku,product,category,quantity,unit_price,discount,currency"


def csv_field(value):
    text = str(value)
    if any(c in text for c in ",\"\n"):
        return '"' + text.replace('"', '""') + '"'
    return text


def order_row(i, rng, bad):
    country = rng.choice(COUNTRIES)
    sku, product, category, price = rng.choice(PRODUCTS)
    row = {
        "order_id": f"O-{i:08d}", "order_date": f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}",
        "customer_id": f"C-{rng.randint(1, 50000):06d}", "customer_name": rng.choice(NAMES), "country": country,
        "sku": sku, "product": product, "category": category, "quantity": rng.randint(1, 6),
        "unit_price": price, "discount": rng.choice(["", "0.1", "0.25", "0"]), "currency": CURRENCY[country],
    }
    if bad:
        flaw = rng.randrange(5)
        if flaw == 0:
            row["quantity"] = 0
        elif flaw == 1:
            row["order_date"] = "2026-02-30"
        elif flaw == 2:
            row["currency"] = "XYZ"
        elif flaw == 3:
            row["country"] = ""
        else:
            row["unit_price"] = "twelve"
    return ",".join(csv_field(row[c]) for c in HEADER.split(","))


def reading_line(i, rng, bad):
    sensor = rng.randrange(1, 40)
    reading = {
        "sensor_id": f"{SITES[sensor % len(SITES)][:3]}-{sensor:03d}", "site": SITES[sensor % len(SITES)],
        "ts": f"2026-11-{rng.randint(1, 20):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{i % 60:02d}Z",
        "temperature_c": round(rng.uniform(-25, 15), 1), "humidity_pct": round(rng.uniform(40, 100), 1),
        "pressure_hpa": round(rng.uniform(980, 1040), 1), "battery_v": round(rng.uniform(3.1, 3.7), 2),
    }
    if bad:
        flaw = rng.randrange(4)
        if flaw == 0:
            reading["temperature_c"] = 99.5
        elif flaw == 1:
            del reading["sensor_id"]
        elif flaw == 2:
            reading["ts"] = "yesterday"
        else:
            return '{"sensor_id": "broken-json", "temperature_c": '
    return json.dumps(reading, separators=(",", ":"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["orders", "readings"])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--mb", type=float, help="generate rows until the output reaches this many MB (10^6 bytes)")
    parser.add_argument("--bad-every", type=int, default=None, help="about one broken row in this many (0: none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=1, help="first row number (order ids)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    bad_every = args.bad_every if args.bad_every is not None else (97 if args.kind == "orders" else 89)
    make = order_row if args.kind == "orders" else reading_line
    out = sys.stdout
    written = 0
    if args.kind == "orders":
        out.write(HEADER + "\n")
        written += len(HEADER) + 1
    limit = int(args.mb * 1_000_000) if args.mb else None
    i = args.start
    while (limit is None and i < args.start + args.rows) or (limit is not None and written < limit):
        bad = bad_every > 0 and rng.randrange(bad_every) == 0
        line = make(i, rng, bad) + "\n"
        out.write(line)
        written += len(line)
        i += 1


if __name__ == "__main__":
    main()
