"""Small realistic customs lines for fast tests (the real corpus is used in slow tests)."""

from __future__ import annotations

import csv
from pathlib import Path

_CLASSES = {
    "3924100000": ["PLASTIC STORAGE BOWLS", "PLASTIC CUPS", "PLASTIC PLATES", "PLASTIC SPOON",
                   "PLASTIC WATER BOTTLES", "PLASTIC KITCHEN CONTAINERS", "PLASTIC TABLEWARE SET",
                   "PLASTIC FOOD BOX", "PLASTIC SERVING TRAY", "PLASTIC DRINKING MUG"],
    "8711200000": ["MOTORCYCLE 150CC HONDA", "MOTOR CYCLE BAJAJ BOXER", "MOTORBIKE YAMAHA 125CC",
                   "NEW MOTORCYCLES TVS", "MOTORCYCLE SUZUKI", "HONDA ACE MOTORBIKE",
                   "MOTORCYCLE HAOJUE", "DIRT BIKE MOTORCYCLE", "MOTORCYCLE CKD KIT", "SCOOTER MOTORCYCLE"],
    "6309000000": ["USED CLOTHING", "BALES OF USED CLOTHES", "WORN CLOTHING", "SECOND HAND CLOTHES",
                   "USED GARMENTS", "USED SHOES AND CLOTHING", "USED CLOTHES MIXED", "WORN GARMENTS BALES",
                   "USED T SHIRTS", "USED JACKETS"],
    "4016930000": ["RUBBER GASKET", "O RING RUBBER", "RUBBER SEAL KIT", "GASKET RUBBER FOR PUMP",
                   "RUBBER WASHER SEAL", "OIL SEAL RUBBER", "RUBBER O RINGS SET", "RUBBER GASKETS ASSORTED",
                   "DOOR RUBBER SEAL", "RUBBER SEALING RING"],
    "8421310000": ["AIR FILTER", "AIR FILTER ELEMENT", "ENGINE AIR FILTER", "AIR CLEANER FILTER",
                   "AIR FILTER FOR TRUCK", "INTAKE AIR FILTER", "AIR FILTER CARTRIDGE", "CAR AIR FILTER",
                   "AIR FILTER ASSY", "AIR FILTERS TOYOTA"],
}


def sample_rows(copies: int = 3) -> list[tuple[str, str]]:
    """(description, code) rows: each phrase in several packings, as declarations are."""
    rows = []
    for code, phrases in _CLASSES.items():
        for i, phrase in enumerate(phrases):
            for c in range(copies):
                rows.append((f"{10 + 7 * c + i} CTNS X {c + 2} PCS {phrase}", code))
    return rows


def write_csv(path: Path, rows, header=("goods_description", "hs_code")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
