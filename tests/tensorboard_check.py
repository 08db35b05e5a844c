#!/usr/bin/env python3
"""Reads a TensorBoard event file as the format describes it, with nothing
but the standard library, and checks it against the job's metrics CSV.

TFRecord framing: uint64 length (little-endian), uint32 masked CRC-32C of
those 8 bytes, the data, uint32 masked CRC-32C of the data; masked(crc) =
((crc >> 15) | (crc << 17)) + 0xa282ead8. Each record is an Event proto:
wall_time (1, double), step (2, int64), file_version (3, string), summary
(5: repeated value (1: tag (1, string), simple_value (2, float)))).
Usage: tensorboard_check.py EVENTS_FILE METRICS.csv"""
import csv
import struct
import sys

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF

def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i

def fields(buf):
    """(field number, wire type, value) of each field of a message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value

data = open(sys.argv[1], "rb").read()
events = []
i = 0
while i < len(data):
    header = data[i:i + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", data[i + 8:i + 12])
    assert length_crc == masked(header), f"record at {i}: length CRC"
    body = data[i + 12:i + 12 + length]
    (body_crc,) = struct.unpack("<I", data[i + 12 + length:i + 16 + length])
    assert body_crc == masked(body), f"record at {i}: data CRC"
    i += 16 + length
    event = {"scalars": {}}
    for number, wire, value in fields(body):
        if number == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2:
            event["step"] = value
        elif number == 3:
            event["file_version"] = value.decode()
        elif number == 5:
            for n, _, v in fields(value):
                assert n == 1
                tag = simple = None
                for vn, _, vv in fields(v):
                    if vn == 1:
                        tag = vv.decode()
                    elif vn == 2:
                        simple = struct.unpack("<f", vv)[0]
                event["scalars"][tag] = simple
    events.append(event)

assert events and events[0].get("file_version") == "brain.Event:2", "no file_version event first"
columns = {"train_loss": "train/loss", "learning_rate": "train/learning_rate",
           "grad_norm": "train/grad_norm", "tokens_per_second": "train/tokens_per_second",
           "validation_loss": "validation/loss", "perplexity": "validation/perplexity",
           "token_accuracy": "validation/token_accuracy"}
expected = []
for row in csv.DictReader(open(sys.argv[2])):
    scalars = {tag: float(row[c]) for c, tag in columns.items() if row[c] != ""}
    expected.append((int(row["step"]), scalars))
got = [(e["step"], e["scalars"]) for e in events[1:]]
assert len(got) == len(expected), f"{len(got)} events, the CSV has {len(expected)} rows"
for (step, scalars), (want_step, want) in zip(got, expected):
    assert step == want_step, f"step {step}, the CSV says {want_step}"
    assert scalars.keys() == want.keys(), f"step {step}: tags {sorted(scalars)} vs {sorted(want)}"
    for tag, value in want.items():
        f32 = struct.unpack("<f", struct.pack("<f", value))[0]
        assert scalars[tag] == f32, f"step {step} {tag}: {scalars[tag]} vs {value}"
print(f"{len(events)} records, CRCs correct; {len(got)} events equal the CSV's rows")
