"""HS nomenclature (HS 2022 chapters, headings, subheadings) and code normalisation."""

from hsops.domain.codes import HSCode, InvalidCode, normalise_code
from hsops.domain.nomenclature import Nomenclature, nomenclature

__all__ = ["HSCode", "InvalidCode", "normalise_code", "Nomenclature", "nomenclature"]
