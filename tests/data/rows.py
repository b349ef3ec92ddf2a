"""Realistic rows and file writers shared by the data tests."""

from __future__ import annotations

import csv
import io
import json

# (description, code as a declarant would write it, full code after normalisation)
GOOD = [
    ("92 CTNS X 30  PCS  PLASTIC PLATES[16CM]", "3924100000", "3924100000"),
    ("AIR FILTER 2PCS X 5 CTNS", "8421310000", "8421310000"),
    ("WASHER         2G8615", "7318220000", "7318220000"),
    ("USED SOFA CHAIRS (4 SET)", "9401610000", "9401610000"),
    ("BOYS BOXER SHORTS", "6207190000", "6207190000"),
    ("FRESH CUT ROSES", "603110000", "0603110000"),  # leading zero lost by a spreadsheet
    ("70CTNS X 120 PCS PLASTIC WATER BOTTLES[500ML]", "3924.10", "392410"),
    ("USED MOTORCYCLE HONDA CG125", "8711 20 00 00", "8711200000"),
]


def csv_text(rows, header=("description", "hs_code"), newline="\n") -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def good_pairs():
    return [(text, code) for text, code, _ in GOOD]


def jsonl_text(rows, keys=("description", "hs_code")) -> str:
    return "".join(json.dumps(dict(zip(keys, row))) + "\n" for row in rows)
