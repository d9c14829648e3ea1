"""Probe images: read one image, list a probe folder or manifest.

* :func:`read_image` / :func:`read_image_with_info` read a DICOM, PNG, JPEG
  or TIFF file as a 2-D float32 array (brighter = denser).
* :func:`load_probe` lists a folder tree or a CSV/TSV manifest as a
  :class:`Probe` of :class:`ProbeItem`, or reads a public dataset's own
  layout from a spec such as ``"vindr:/data/vindr-mammo?split=test&sample=500"``
  (:data:`LAYOUTS`, :func:`probe_layouts`).
* :func:`select` keeps part of a probe by split, view, laterality, a query on
  its labels and a seeded sample.
* :func:`task_labels` reads one class index per image for a task (``density``,
  ``birads``, ``mass``, ``calcification`` or a label column).
"""

from __future__ import annotations

from mammodissect.probe.dataset import BOX_COLUMNS, IMAGE_EXTENSIONS, Probe, ProbeItem
from mammodissect.probe.images import read_image, read_image_with_info
from mammodissect.probe.layouts import (
    LAYOUTS,
    STANDARD_COLUMNS,
    load_probe,
    probe_layouts,
    read_layout,
)
from mammodissect.probe.select import select
from mammodissect.probe.tasks import BUILTIN_TASKS, TaskLabels, task_labels

__all__ = [
    "BOX_COLUMNS",
    "BUILTIN_TASKS",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "STANDARD_COLUMNS",
    "Probe",
    "ProbeItem",
    "TaskLabels",
    "load_probe",
    "probe_layouts",
    "read_image",
    "read_image_with_info",
    "read_layout",
    "select",
    "task_labels",
]
