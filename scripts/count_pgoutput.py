#!/usr/bin/env python3
"""Counts row changes (Insert/Update/Delete) in pg_recvlogical's pgoutput output.

pg_recvlogical writes every XLogData payload followed by a newline. pgoutput messages are
binary, so the file is walked message by message (protocol version 1) rather than split on
newlines, and any framing error aborts the count: a run only counts if it parses exactly.
"""
import struct
import sys


def cstr(b, i):
    j = b.index(b"\0", i)
    return j + 1


def tuple_end(b, i):
    (n,) = struct.unpack_from(">H", b, i)
    i += 2
    for _ in range(n):
        k = b[i : i + 1]
        i += 1
        if k in (b"t", b"b"):
            (ln,) = struct.unpack_from(">I", b, i)
            i += 4 + ln
        elif k not in (b"n", b"u"):
            raise ValueError(f"bad tuple column kind {k!r} at {i}")
    return i


def main(path):
    b = open(path, "rb").read()
    i = 0
    rows = 0
    while i < len(b):
        t = b[i : i + 1]
        i += 1
        if t == b"B":
            i += 20
        elif t == b"C":
            i += 25
        elif t == b"O":
            i = cstr(b, i + 8)
        elif t == b"R":
            i += 4
            i = cstr(b, i)
            i = cstr(b, i)
            i += 1
            (n,) = struct.unpack_from(">H", b, i)
            i += 2
            for _ in range(n):
                i = cstr(b, i + 1) + 8
        elif t == b"Y":
            i = cstr(b, cstr(b, i + 4))
        elif t == b"I":
            if b[i + 4 : i + 5] != b"N":
                raise ValueError("insert without N")
            i = tuple_end(b, i + 5)
            rows += 1
        elif t == b"U":
            i += 4
            if b[i : i + 1] in (b"K", b"O"):
                i = tuple_end(b, i + 1)
            if b[i : i + 1] != b"N":
                raise ValueError("update without N")
            i = tuple_end(b, i + 1)
            rows += 1
        elif t == b"D":
            i = tuple_end(b, i + 5)
            rows += 1
        elif t == b"T":
            (n,) = struct.unpack_from(">I", b, i)
            i += 5 + 4 * n
        elif t == b"M":
            i = cstr(b, i + 9)
            (ln,) = struct.unpack_from(">I", b, i)
            i += 4 + ln
        else:
            raise ValueError(f"unknown message {t!r} at offset {i - 1}")
        if b[i : i + 1] != b"\n":
            raise ValueError(f"framing lost at offset {i}")
        i += 1
    print(rows)


if __name__ == "__main__":
    main(sys.argv[1])
