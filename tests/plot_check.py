#!/usr/bin/env python3
"""Checks an SVG from `tuneforge jobs plot` against the job's metrics CSV:
the SVG parses as XML, and each series' points, mapped back through the axes
the plot area declares, are the CSV's values (to a pixel's worth).
Usage: plot_check.py PLOT.svg METRICS.csv. Standard library only."""
import csv
import sys
import xml.etree.ElementTree as ET

NS = "{http://www.w3.org/2000/svg}"
svg = ET.parse(sys.argv[1]).getroot()  # raises on malformed XML
plot = svg.find(f"{NS}g[@id='plot']")
a = {k[5:]: float(v) for k, v in plot.attrib.items() if k.startswith("data-")}
rows = list(csv.DictReader(open(sys.argv[2])))
series = {p.get("data-series"): p.get("points").split() for p in plot.iter(f"{NS}polyline")}

def back(px, py, low, high):
    step = (px - a["left"]) / (a["right"] - a["left"]) * a["step-max"]
    value = low + (a["bottom"] - py) / (a["bottom"] - a["top"]) * (high - low)
    return step, value

failures = 0
for name, column, low, high in [("train_loss", "train_loss", a["loss-min"], a["loss-max"]),
                                ("validation_loss", "validation_loss", a["loss-min"], a["loss-max"]),
                                ("learning_rate", "learning_rate", 0.0, a["lr-max"])]:
    expected = [(int(r["step"]), float(r[column])) for r in rows if r[column] != ""]
    points = [tuple(map(float, p.split(","))) for p in series.get(name, [])]
    if len(points) != len(expected) or not expected:
        print(f"{name}: {len(points)} points, the CSV has {len(expected)} values")
        failures += 1
        continue
    pixel_step = a["step-max"] / (a["right"] - a["left"])
    pixel_value = (high - low) / (a["bottom"] - a["top"])
    for (px, py), (step, value) in zip(points, expected):
        s, v = back(px, py, low, high)
        if abs(s - step) > pixel_step or abs(v - value) > pixel_value:
            print(f"{name}: point ({px}, {py}) reads as step {s:.2f}, {v:.6g}; "
                  f"the CSV says step {step}, {value:.6g}")
            failures += 1
    print(f"{name}: {len(points)} points match the CSV")
sys.exit(1 if failures else 0)
