"""The names the phantom world uses: finding families and the concepts it draws.

Every concept is an exact string of the bundled ``birads`` concept set
(``mammodissect/concepts/data/birads.yaml``), so a phantom's masks are labelled with the very
strings a dissection scores. Each concept belongs to one *family*: ``anatomy`` and
``composition`` describe every breast; the other ten are the finding families that become the
image-level label columns.
"""

from __future__ import annotations

__all__ = [
    "ANATOMY",
    "COMPOSITION",
    "DENSITIES",
    "FAMILIES",
    "PHANTOM_CONCEPTS",
    "concepts_of",
]

#: Finding families, in label-column order. ``calcification`` is set by any calcification
#: (benign or suspicious); ``suspicious_calcification`` only by suspicious morphologies.
FAMILIES: tuple[str, ...] = (
    "mass",
    "calcification",
    "suspicious_calcification",
    "architectural_distortion",
    "asymmetry",
    "skin_thickening",
    "nipple_retraction",
    "lymph_node",
    "biopsy_clip",
    "implant",
)

#: BI-RADS breast composition letters.
DENSITIES: tuple[str, ...] = ("A", "B", "C", "D")

#: Family of the concepts every breast has.
ANATOMY = "anatomy"
#: Family of the four breast-composition concepts (one per image, mask = the breast).
COMPOSITION = "composition"

_BY_FAMILY: dict[str, tuple[str, ...]] = {
    ANATOMY: (
        "breast",
        "skin line",
        "nipple",
        "pectoral muscle",
        "fibroglandular tissue",
        "fatty tissue",
        "blood vessels",
        "Cooper's ligaments",
    ),
    COMPOSITION: (
        "almost entirely fatty breasts",
        "scattered areas of fibroglandular density",
        "heterogeneously dense breasts",
        "extremely dense breasts",
    ),
    "mass": (
        "mass",
        "oval mass",
        "round mass",
        "irregular mass",
        "circumscribed margin",
        "obscured margin",
        "microlobulated margin",
        "indistinct margin",
        "spiculated margin",
        "high density mass",
        "equal density mass",
        "low density mass",
        "fat-containing mass",
    ),
    "calcification": (
        "calcifications",
        "typically benign calcifications",
        "punctate calcifications",
        "round calcifications",
        "coarse or popcorn-like calcifications",
        "rim calcifications",
        "vascular calcifications",
        "grouped calcifications",
        "linear calcifications",
        "segmental calcifications",
        "regional calcifications",
        "diffuse calcifications",
    ),
    "suspicious_calcification": (
        "suspicious calcifications",
        "amorphous calcifications",
        "fine pleomorphic calcifications",
        "fine linear or fine-linear branching calcifications",
    ),
    "architectural_distortion": ("architectural distortion",),
    "asymmetry": ("asymmetry", "focal asymmetry", "global asymmetry"),
    "skin_thickening": ("skin thickening", "focal skin thickening", "diffuse skin thickening"),
    "nipple_retraction": ("nipple retraction",),
    "lymph_node": (
        "intramammary lymph node",
        "normal axillary lymph node",
        "axillary adenopathy",
    ),
    "biopsy_clip": ("biopsy clip",),
    "implant": ("breast implant", "silicone implant", "saline implant"),
}

#: Every concept the generator can draw -> its family; each key is an exact ``birads`` string.
PHANTOM_CONCEPTS: dict[str, str] = {
    concept: family for family, concepts in _BY_FAMILY.items() for concept in concepts
}

#: Composition concept of each density letter.
COMPOSITION_CONCEPT: dict[str, str] = dict(zip(DENSITIES, _BY_FAMILY[COMPOSITION], strict=True))

#: Concept names of the mass descriptors, keyed by descriptor value.
MASS_SHAPE = {"oval": "oval mass", "round": "round mass", "irregular": "irregular mass"}
MASS_MARGIN = {
    margin: f"{margin} margin"
    for margin in ("circumscribed", "obscured", "microlobulated", "indistinct", "spiculated")
}
MASS_DENSITY = {
    "high": "high density mass",
    "equal": "equal density mass",
    "low": "low density mass",
    "fat-containing": "fat-containing mass",
}
#: Calcification morphologies -> (concept, suspicious?).
CALC_MORPHOLOGY: dict[str, tuple[str, bool]] = {
    "punctate": ("punctate calcifications", False),
    "round": ("round calcifications", False),
    "coarse": ("coarse or popcorn-like calcifications", False),
    "rim": ("rim calcifications", False),
    "vascular": ("vascular calcifications", False),
    "amorphous": ("amorphous calcifications", True),
    "fine pleomorphic": ("fine pleomorphic calcifications", True),
    "fine linear branching": ("fine linear or fine-linear branching calcifications", True),
}
CALC_DISTRIBUTION = {
    distribution: f"{distribution} calcifications"
    for distribution in ("grouped", "linear", "segmental", "regional", "diffuse")
}


def concepts_of(family: str) -> tuple[str, ...]:
    """Return the concepts of ``family`` in declaration order."""
    return _BY_FAMILY[family]
