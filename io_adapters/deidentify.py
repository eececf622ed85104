"""De-identify a DICOM dataset: the PS3.15 Annex E Basic Profile, at every level of nesting.

``deidentify(ds)`` is what ``zssr upscale --deidentify`` (the DICOM writer's
``deidentify=True`` option) applies to every output file.  One recursive pass
visits every element of the dataset, of its file meta, and of every item of
every sequence at any depth, and applies, in this order:

1. private (odd-group) tags: removed (Basic Profile: "X" for private attributes);
2. the attribute's action from :data:`io_adapters._deid_profile.BASIC_PROFILE`
   (PS3.15 Table E.1-1, Basic Profile column; the source is named there):
   ``X`` remove, ``Z`` empty, ``D`` dummy value, ``U`` new UID, ``K`` keep;
3. class rules for attributes the table subset does not name, so nothing
   identifying slips through by its keyword being missing:
   every person name (VR PN) emptied, every date / date-time (DA, DT)
   emptied, every UID (VR UI) that is not a DICOM-registered one
   (``1.2.840.10008.*``) and does not name a kind of thing (``*ClassUID``,
   ``*SyntaxUID``, ``*CodingSchemeUID``, ...) replaced like ``U``.

Removed sequences (``OriginalAttributesSequence``, ``ReferencedPatientSequence``,
``RequestAttributesSequence``, ...) go with everything inside them; kept ones
(``SourceImageSequence``, ``ReferencedImageSequence``, functional groups) are
walked and cleaned item by item.

UIDs are replaced consistently: ``new = generate_uid(entropy_srcs=[key, old])``
with one random 32-byte key per process, so every reference to a study,
series, frame of reference or instance inside one run's outputs points to the
same new UID (a series folder stays one series of one study), while nobody
without the key can link a new UID back to the original.  Two processes (two
runs, or two Dask worker processes) give different new UIDs for the same
original.

The result is marked: ``PatientIdentityRemoved = YES``,
``DeidentificationMethod`` and ``DeidentificationMethodCodeSequence``
(DCM 113100 "Basic Application Confidentiality Profile"),
``LongitudinalTemporalInformationModified = REMOVED``.

**Limits, said plainly.**  Text burned into the pixels, overlays (group
60xx), curves and the content of unlisted free-text attributes with
non-person VRs (LO/SH/LT/ST/UT not in the table subset) are not inspected.
Use a dedicated tool (``deid``, ``dicognito``, a PACS anonymiser) when outputs
must be certified against the full profile and its options.
"""

from __future__ import annotations

import logging
import secrets

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from ._deid_profile import BASIC_PROFILE, DUMMY_BY_VR

__all__ = ["BASIC_PROFILE", "METHOD", "deidentify", "new_uid"]

logger = logging.getLogger(__name__)

METHOD = "PS3.15 Annex E Basic Profile (zssr-pipeline, nested)"  # LO: <= 64 chars
_REGISTERED_UID_ROOT = "1.2.840.10008."
_CLASS_EMPTIED_VRS = frozenset({"PN", "DA", "DT"})
_ACTIONS = frozenset("XZDUK")
# UIDs that name a kind of thing (SOP class, transfer syntax, coding scheme, context
# group, mapping resource), never an instance: kept even when not DICOM-registered.
_NAMING_UIDS = ("ClassUID", "SyntaxUID", "CodingSchemeUID", "ContextUID", "ResourceUID")
_KEY = secrets.token_bytes(32)  # one per process: consistent, unlinkable UID replacement


def _check_profile() -> dict[int, str]:
    """The profile keyed by tag; refuses an unknown keyword, action or dummy VR."""
    by_tag: dict[int, str] = {}
    for keyword, action in BASIC_PROFILE.items():
        tag = tag_for_keyword(keyword)
        if tag is None or action not in _ACTIONS:
            raise ValueError(f"_deid_profile: bad entry {keyword!r}: {action!r}")
        if action == "D" and dictionary_VR(tag) not in DUMMY_BY_VR:
            raise ValueError(f"_deid_profile: no dummy value for {keyword} "
                             f"(VR {dictionary_VR(tag)})")
        by_tag[tag] = action
    return by_tag


_ACTION_BY_TAG = _check_profile()


def new_uid(old: str) -> str:
    """The replacement for UID ``old``: the same within this process, unlinkable outside it."""
    return str(generate_uid(entropy_srcs=[_KEY.hex(), old]))


def _replace_uids(value: object) -> object:
    if isinstance(value, (list, tuple, MultiValue)):
        return [_replace_uid(str(v)) for v in value]
    return _replace_uid(str(value)) if value not in (None, "") else value


def _replace_uid(old: str) -> str:
    return old if old.startswith(_REGISTERED_UID_ROOT) else new_uid(old)


def _action(elem: DataElement) -> str:
    """The action for ``elem``: the profile's, else a class rule's, else keep."""
    action = _ACTION_BY_TAG.get(int(elem.tag))
    if action is not None:
        return action
    if elem.VR in _CLASS_EMPTIED_VRS:
        return "Z"
    if elem.VR == "UI" and not elem.keyword.endswith(_NAMING_UIDS):
        return "U"
    return "K"


def _clean(ds: Dataset) -> None:
    """Apply the actions to every element of ``ds`` and, recursively, of its sequences."""
    for tag in list(ds.keys()):
        elem = ds[tag]
        if elem.tag.is_private:
            del ds[tag]
            continue
        action = _action(elem)
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else None
        elif action == "D":
            elem.value = DUMMY_BY_VR[elem.VR]
        elif action == "U":
            elem.value = _replace_uids(elem.value)
        elif elem.VR == "SQ":
            for item in elem.value:
                _clean(item)


def _method_code() -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    return code


def deidentify(ds: Dataset) -> Dataset:
    """Apply the profile described in the module docstring to ``ds`` in place."""
    _clean(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in ds:  # the file meta names the instance too
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    ds.DeidentificationMethodCodeSequence = Sequence([_method_code()])
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    logger.debug("de-identified %s", ds.get("SOPInstanceUID", "a dataset"))
    return ds
