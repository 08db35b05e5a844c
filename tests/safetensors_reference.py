"""An independent safetensors reader and writer, from the format's description,
with Python's standard library only. safetensors_test uses it to check that
Tuneforge's C++ reads what another implementation wrote, and the other way round.

  safetensors_reference.py write PATH   writes the reference tensors
  safetensors_reference.py check PATH   checks a file holds them; exit 1 if not
"""
import json
import struct
import sys


def bf16(x):
    return struct.pack("<f", x)[2:]  # the high half of a little-endian float32


TENSORS = {  # name: (dtype, shape, little-endian bytes)
    "a": ("F32", [2, 3], struct.pack("<6f", 0.5, -1.25, 3.0, 1e-3, 7.0, -0.0)),
    "b": ("F16", [4], struct.pack("<4e", 1.0, -2.0, 0.5, 65504.0)),
    "c": ("BF16", [2], bf16(1.5) + bf16(-3.0)),
    "d": ("I64", [3], struct.pack("<3q", 1, -2, 2**40)),
}
METADATA = {"format": "pt"}


def write(path):
    header, offset = {"__metadata__": METADATA}, 0
    for name, (dtype, shape, data) in TENSORS.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header).encode()  # no padding: readers must not need it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, _, data in TENSORS.values():
            f.write(data)


def check(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    assert header.get("__metadata__") == METADATA, header.get("__metadata__")
    for name, (dtype, shape, expected) in TENSORS.items():
        t = header[name]
        assert t["dtype"] == dtype and t["shape"] == shape, (name, t)
        begin, end = t["data_offsets"]
        assert data[begin:end] == expected, name
    assert sorted(k for k in header if k != "__metadata__") == sorted(TENSORS)
    assert (8 + n) % 8 == 0, "the data section should start 8-byte aligned"


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](sys.argv[2])
