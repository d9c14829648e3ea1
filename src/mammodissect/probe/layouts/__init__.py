"""Readers of public mammography datasets in the folder layout users download.

Each layout turns a dataset folder into a :class:`~mammodissect.probe.Probe` with one
item per image, labels under standard names (:data:`STANDARD_COLUMNS`: ``patient_id,
study_id, view, laterality, split, density, birads, findings``, plus each dataset's
own columns in snake_case) and, where the dataset has regions, :attr:`Probe.boxes`.

* ``vindr`` -- VinDr-Mammo (:mod:`.vindr`)
* ``cbis-ddsm`` -- CBIS-DDSM (:mod:`.cbis_ddsm`)
* ``embed`` -- EMBED Open Data (:mod:`.embed`)
* ``csaw-cc`` -- CSAW-CC (:mod:`.csaw_cc`)
* ``rsna`` -- RSNA Screening Mammography (:mod:`.rsna`)
* ``folder``, ``csv`` -- the plain forms of :func:`~mammodissect.probe.load_probe`

``load_probe("vindr:/data/vindr-mammo?split=test&sample=500&seed=1")`` reads and
selects in one call (:func:`load_layout_spec`).
"""

from __future__ import annotations

from mammodissect.probe.layouts._common import MISSING_POLICIES, STANDARD_COLUMNS
from mammodissect.probe.layouts.registry import (
    LAYOUTS,
    SELECT_OPTIONS,
    Layout,
    get_layout,
    is_layout_spec,
    load_layout_spec,
    load_probe,
    parse_layout_spec,
    probe_layouts,
    read_layout,
)

__all__ = [
    "LAYOUTS",
    "MISSING_POLICIES",
    "SELECT_OPTIONS",
    "STANDARD_COLUMNS",
    "Layout",
    "get_layout",
    "is_layout_spec",
    "load_layout_spec",
    "load_probe",
    "parse_layout_spec",
    "probe_layouts",
    "read_layout",
]
