"""Text phantom-clip learns beyond the concept names: other ways to say each drawn concept,
and text negatives, strings no phantom ever shows.

Two rules keep the bundled concept sets a fair test of the trained dissector:

- **Synonyms** are phrasings of the BI-RADS lexicon and of report language, written here, and
  none is a string of a bundled concept set: the near-synonyms in ``birads`` are scored by a
  dissector that never trained on them.
- **Negatives** come from vocabularies disjoint from every bundled set: ImageNet class names
  (torchvision's list; ``controls`` takes every tenth, and none of those, nor any name sharing a
  word-for-word part with a bundled string, is kept) and phrases about other body parts,
  modalities and everyday scenes. ``controls`` therefore stays a held-out measure of how much
  a non-mammography string leaks into the labels. :func:`overlaps` is the rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from mammodissect import concepts as concept_sets
from mammodissect.models.imagenet import imagenet_classes

__all__ = ["NEGATIVE_PHRASES", "SYNONYMS", "overlaps", "text_negatives", "training_texts"]

#: Other ways radiologists say each concept the phantoms draw (none a bundled concept string).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "breast": ("breast outline on the mammogram", "the imaged breast"),
    "skin line": ("breast skin contour", "cutaneous outline of the breast"),
    "nipple": ("nipple tip on the skin contour", "areolar protrusion"),
    "pectoral muscle": ("pectoralis major muscle shadow", "muscle at the chest wall edge"),
    "fibroglandular tissue": ("glandular parenchyma", "dense glandular breast tissue"),
    "fatty tissue": ("radiolucent fat", "adipose breast tissue"),
    "blood vessels": ("vascular structures of the breast", "tubular vascular shadows"),
    "Cooper's ligaments": ("fibrous suspensory strands", "thin curvilinear septa"),
    "almost entirely fatty breasts": (
        "breast made up mostly of fat",
        "predominantly fatty composition",
    ),
    "scattered areas of fibroglandular density": (
        "a few islands of glandular tissue",
        "composition with scattered density",
    ),
    "heterogeneously dense breasts": (
        "heterogeneous dense parenchyma",
        "dense tissue that may hide small masses",
    ),
    "extremely dense breasts": ("very dense breast parenchyma", "uniformly dense breasts"),
    "mass": ("a lesion seen in two projections", "lesion with convex outward borders"),
    "oval mass": ("elliptical lesion", "egg-shaped lesion"),
    "round mass": ("spherical lesion", "ball-shaped lesion"),
    "irregular mass": ("irregularly shaped lesion", "lesion of irregular outline"),
    "circumscribed margin": ("sharply defined lesion border", "well-defined margin"),
    "obscured margin": ("margin hidden by overlying tissue", "partly concealed border"),
    "microlobulated margin": ("border with small undulations", "finely lobulated border"),
    "indistinct margin": ("poorly defined border", "blurred lesion edge"),
    "spiculated margin": ("lesion with radiating spicules", "spiky lesion border"),
    "high density mass": ("hyperdense lesion", "lesion denser than the glandular tissue"),
    "equal density mass": ("isodense lesion", "lesion as dense as the glandular tissue"),
    "low density mass": ("hypodense lesion", "lesion less dense than the glandular tissue"),
    "fat-containing mass": ("fat-density lesion", "lesion with fatty content"),
    "calcifications": ("calcific deposits", "tiny calcium specks"),
    "typically benign calcifications": ("benign-appearing calcium", "benign calcium deposits"),
    "punctate calcifications": ("pinpoint calcific dots", "tiny dot-like calcium"),
    "round calcifications": ("small round calcium deposits", "spherical calcific deposits"),
    "coarse or popcorn-like calcifications": (
        "popcorn calcification of a fibroadenoma",
        "large coarse calcium deposits",
    ),
    "rim calcifications": ("calcium along a shell", "calcified cyst wall"),
    "vascular calcifications": ("calcified vessel walls", "tram-track calcification"),
    "grouped calcifications": (
        "a cluster of calcific specks",
        "a few calcium specks close together",
    ),
    "linear calcifications": ("calcium in a line", "calcific deposits arranged in a line"),
    "segmental calcifications": ("calcium along a duct system", "ductal segment of calcium"),
    "regional calcifications": ("calcium over a large region", "calcific deposits in one region"),
    "diffuse calcifications": ("scattered calcium throughout", "calcium spread everywhere"),
    "suspicious calcifications": ("worrisome calcifications", "calcium deposits of concern"),
    "amorphous calcifications": ("indistinct hazy calcifications", "smudgy faint calcium"),
    "fine pleomorphic calcifications": (
        "calcifications of varying shape and size",
        "heterogeneous small calcific particles",
    ),
    "fine linear or fine-linear branching calcifications": (
        "thin branching calcium along ducts",
        "branching linear calcium specks",
    ),
    "architectural distortion": ("distorted parenchyma", "tethering of tissue toward a point"),
    "asymmetry": ("asymmetric density", "density seen in only one projection"),
    "focal asymmetry": ("localized asymmetric density", "small area of asymmetric tissue"),
    "global asymmetry": ("asymmetric tissue over a quadrant", "large area of extra density"),
    "skin thickening": ("skin wider than normal", "broadened skin layer"),
    "focal skin thickening": ("localized thickened skin", "a short thickened skin segment"),
    "diffuse skin thickening": ("skin thickened all around", "generalized thick skin"),
    "nipple retraction": ("nipple pulled inward", "nipple drawn into the breast"),
    "intramammary lymph node": ("lymph node inside the breast", "reniform node with fatty hilum"),
    "normal axillary lymph node": ("benign node in the axilla", "axillary node with fatty hilum"),
    "axillary adenopathy": ("enlarged axillary nodes", "dense swollen axillary node"),
    "biopsy clip": ("post-biopsy marker", "small metal marker left after biopsy"),
    "breast implant": ("breast prosthesis", "augmentation prosthesis"),
    "silicone implant": ("silicone-filled prosthesis", "dense silicone prosthesis"),
    "saline implant": ("saline-filled prosthesis", "fluid-filled prosthesis with a valve"),
}

#: Phrases about other body parts, modalities and scenes (no phantom shows any of them).
NEGATIVE_PHRASES: tuple[str, ...] = (
    "chest radiograph with both lungs",
    "knee joint radiograph",
    "dental panoramic radiograph",
    "brain MRI slice",
    "abdominal CT slice",
    "hand radiograph with finger bones",
    "fetal ultrasound",
    "spine on a lateral radiograph",
    "pelvis radiograph",
    "skull radiograph",
    "a page of printed text",
    "a spreadsheet on a screen",
    "a city skyline at night",
    "a crowd at a concert",
    "a plate of pasta",
    "a forest trail in autumn",
    "a football match",
    "a handwritten letter",
    "a street map",
    "a bowl of fruit",
    "snow on mountains",
    "a smiling child",
    "a busy kitchen",
    "an empty parking lot",
    "a sailing boat at sea",
    "a barcode",
    "a bar chart",
    "a wedding photograph",
    "a cartoon character",
    "a microscope slide of blood cells",
)


def _words(text: str) -> str:
    """Lower case, words only, a plural ``s`` dropped from each word."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words)


def overlaps(text: str, concepts: Iterable[str]) -> bool:
    """Whether ``text`` shares a string with ``concepts``: after :func:`_words`, one equals
    the other or holds it as whole words ("bighorn sheep" overlaps "sheep").

    Examples
    --------
    >>> overlaps("bighorn sheep", ["sheep"]), overlaps("sheepdog", ["sheep"])
    (True, False)
    """
    mine = f" {_words(text)} "
    for concept in concepts:
        theirs = f" {_words(concept)} "
        if theirs.strip() and (theirs in mine or mine in theirs):
            return True
    return False


def _bundled_strings() -> list[str]:
    return list(concept_sets.load("birads+controls").concepts)


@lru_cache(maxsize=1)
def text_negatives() -> tuple[str, ...]:
    """The text negatives: ImageNet class names and :data:`NEGATIVE_PHRASES`, less every one
    that :func:`overlaps` a bundled concept string (so none is, or contains, a ``controls``
    or ``birads`` string)."""
    bundled = _bundled_strings()
    candidates = dict.fromkeys([*imagenet_classes(), *NEGATIVE_PHRASES])
    return tuple(c for c in candidates if not overlaps(c, bundled))


def training_texts(concepts: Iterable[str]) -> tuple[list[str], list[int]]:
    """Every positive text target for ``concepts``: each concept's name, then its
    :data:`SYNONYMS`; returns the strings and, per string, the index of its concept."""
    strings: list[str] = []
    owner: list[int] = []
    for index, concept in enumerate(concepts):
        for text in (concept, *SYNONYMS.get(concept, ())):
            strings.append(text)
            owner.append(index)
    return strings, owner
