"""Remove patient-identifying attributes from a DICOM dataset (optional output step).

``deidentify(ds)`` is what ``zssr upscale --deidentify`` (the DICOM writer's
``deidentify=True`` option) applies to every output file.  It

* empties the Type 2 attributes that identify the patient or the visit
  (:data:`EMPTIED`: PatientName, PatientID, PatientBirthDate, PatientSex,
  ReferringPhysicianName, AccessionNumber, StudyID) so the object stays valid;
* deletes the other identifying attributes listed in :data:`REMOVED`
  (other IDs and names, birth time, address, telephone numbers, age, size,
  weight, insurance, institution and staff names, comments, ...), at every
  level of nested sequences;
* deletes all private (odd-group) tags, which may hold anything;
* records the step: ``PatientIdentityRemoved = YES`` and a
  ``DeidentificationMethod`` naming this list.

**This is NOT a full de-identification profile.**  It does not implement
the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile:
UIDs (study, series, frame of reference), dates and times, free-text
descriptions, device serial numbers, overlays and text burned into the
pixels are kept.  Use a dedicated tool (e.g. ``deid``, ``dicognito``, a
PACS anonymiser) when outputs must meet a de-identification standard.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

__all__ = ["EMPTIED", "REMOVED", "METHOD", "deidentify"]

#: Type 2 attributes (must be present, may be empty): emptied, not removed.
EMPTIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
           "ReferringPhysicianName", "AccessionNumber", "StudyID")

#: Attributes deleted wherever they occur.
REMOVED = (
    "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientBirthTime",
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation",
    "PatientMotherBirthName", "PatientAge", "PatientSize", "PatientWeight",
    "PatientInsurancePlanCodeSequence", "PatientPrimaryLanguageCodeSequence",
    "MedicalRecordLocator", "MilitaryRank", "BranchOfService", "CountryOfResidence",
    "RegionOfResidence", "EthnicGroup", "Occupation", "AdditionalPatientHistory",
    "PatientComments", "PatientReligiousPreference", "ResponsiblePerson",
    "ResponsibleOrganization", "PersonName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "PhysiciansOfRecord", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician",
    "ScheduledPerformingPhysicianName", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "StationName", "RequestAttributesSequence",
)

METHOD = "zssr-pipeline attribute removal; not PS3.15 Basic Profile"  # LO: <= 64 chars


def _clean(ds: Dataset) -> None:
    for keyword in REMOVED:
        if keyword in ds:
            delattr(ds, keyword)
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _clean(item)


def deidentify(ds: Dataset) -> Dataset:
    """Apply the attribute removal described in the module docstring to ``ds`` in place."""
    ds.remove_private_tags()
    _clean(ds)
    for keyword in EMPTIED:
        if keyword in ds:
            ds[keyword].value = None
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    return ds
