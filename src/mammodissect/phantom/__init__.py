"""A synthetic mammography world: seeded 2D mammogram phantoms with masks, labels and reports.

Each phantom is a CC or MLO view of a left or right breast (default 320 x 192 pixels, height x
width, the aspect of 1520 x 912) with a skin line, nipple, pectoral muscle (MLO), power-law
fibroglandular texture at the four BI-RADS composition levels, vessels and Cooper's ligaments,
and findings drawn from configurable rates: masses (shape, margin, density), calcifications
(morphology, distribution), architectural distortion, focal and global asymmetry, skin
thickening, nipple retraction, lymph nodes, biopsy clips and implants. Every concept drawn has a
pixel mask named by its exact ``birads`` concept string, the image has a label table and a
radiology report, and a set can be written as a probe (PNG + masks + manifest).

>>> from mammodissect.phantom import PhantomSettings, generate, write_phantoms
>>> phantoms = generate(8, seed=0)
>>> phantoms[0].masks["breast"].shape
(320, 192)
>>> manifest = write_phantoms("/tmp/phantoms", phantoms)  # doctest: +SKIP
"""

from __future__ import annotations

from mammodissect.phantom.generate import Phantom, generate, make_phantom, overall_birads
from mammodissect.phantom.masks import MaskSet
from mammodissect.phantom.reports import FAMILY_PATTERNS
from mammodissect.phantom.scene import Finding
from mammodissect.phantom.settings import DEFAULT_RATES, PhantomSettings, expected_rates
from mammodissect.phantom.vocabulary import DENSITIES, FAMILIES, PHANTOM_CONCEPTS
from mammodissect.phantom.write import MANIFEST_COLUMNS, contact_sheet, read_masks, write_phantoms

__all__ = [
    "DEFAULT_RATES",
    "DENSITIES",
    "FAMILIES",
    "FAMILY_PATTERNS",
    "MANIFEST_COLUMNS",
    "PHANTOM_CONCEPTS",
    "Finding",
    "MaskSet",
    "Phantom",
    "PhantomSettings",
    "contact_sheet",
    "expected_rates",
    "generate",
    "make_phantom",
    "overall_birads",
    "read_masks",
    "write_phantoms",
]
