"""The attribute actions of the DICOM PS3.15 Basic Application Level Confidentiality Profile.

Source: DICOM PS3.15 (Security and System Management Profiles), Annex E,
Table E.1-1 "Application Level Confidentiality Profile Attributes", column
"Basic Prof." (dicom.nema.org/medical/dicom/current/output/html/part15.html,
transcribed for the attributes below; 2024 editions).  Action codes are the
standard's:

* ``X`` remove the attribute;
* ``Z`` replace with a zero-length value (Type 2 attributes: must stay present);
* ``D`` replace with a non-zero dummy value of the same VR (Type 1 attributes);
* ``U`` replace the UID with a new one, consistently: the same input UID
  gives the same output UID within one process (see ``deidentify.py``).

Where the table offers a choice (``X/Z``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``) the
entry below takes the first one that keeps a CT/MR/secondary-capture image
valid: ``Z`` for the Type 2 patient/study attributes, ``U`` for the
references whose items we keep (their UIDs are replaced, item by item).

One deliberate deviation, marked ``K`` (keep): ``DerivationDescription`` is
written by this project's DICOM writer itself (``"Zero-Shot Super-Resolution
x2 (zssr-pipeline ...)"``) after the source header is copied, so it never
carries source text.

This is a transcription of a subset of the table, not the whole table: the
patient, identity, date, institution, physician/operator, free-text and
UID-bearing attributes.  ``deidentify.py`` adds class rules that catch what
the subset misses (every private tag, every person name, every date,
every non-registered UID, at every level of nesting).
"""

from __future__ import annotations

#: keyword -> action, from PS3.15 Table E.1-1 (Basic Profile column).
BASIC_PROFILE: dict[str, str] = {
    # --- patient identity (Patient module, Patient Demographic, Patient Medical)
    "PatientName": "Z", "PatientID": "Z", "PatientBirthDate": "Z", "PatientSex": "Z",
    "PatientBirthTime": "X", "PatientBirthName": "X", "PatientMotherBirthName": "X",
    "OtherPatientIDs": "X", "OtherPatientIDsSequence": "X", "OtherPatientNames": "X",
    "IssuerOfPatientID": "X", "IssuerOfPatientIDQualifiersSequence": "X",
    "PatientAge": "X", "PatientSize": "X", "PatientWeight": "X", "PatientAddress": "X",
    "PatientTelephoneNumbers": "X", "PatientTelecomInformation": "X",
    "PatientInsurancePlanCodeSequence": "X", "PatientPrimaryLanguageCodeSequence": "X",
    "PatientPrimaryLanguageModifierCodeSequence": "X", "PatientReligiousPreference": "X",
    "PatientComments": "X", "PatientState": "X", "PatientTransportArrangements": "X",
    "PatientSexNeutered": "X", "MedicalRecordLocator": "X", "MilitaryRank": "X",
    "BranchOfService": "X", "CountryOfResidence": "X", "RegionOfResidence": "X",
    "EthnicGroup": "X", "Occupation": "X", "AdditionalPatientHistory": "X",
    "MedicalAlerts": "X", "Allergies": "X", "SmokingStatus": "X", "PregnancyStatus": "X",
    "LastMenstrualDate": "X", "SpecialNeeds": "X", "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X", "InsurancePlanIdentification": "X",
    "ReferencedPatientSequence": "X", "ReferencedPatientAliasSequence": "X",
    "ConfidentialityConstraintOnPatientDataDescription": "X",
    # --- visit / admission / service episode
    "AdmissionID": "X", "IssuerOfAdmissionID": "X", "AdmittingDate": "X",
    "AdmittingTime": "X", "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X", "DischargeDiagnosisDescription": "X",
    "CurrentPatientLocation": "X", "ScheduledPatientInstitutionResidence": "X",
    "ServiceEpisodeID": "X", "ServiceEpisodeDescription": "X",
    "IssuerOfServiceEpisodeID": "X", "VisitComments": "X",
    # --- study, series, request, procedure step
    "AccessionNumber": "Z", "StudyID": "Z", "StudyDate": "Z", "StudyTime": "Z",
    "StudyDescription": "X", "StudyComments": "X", "StudyIDIssuer": "X",
    "SeriesDate": "X", "SeriesTime": "X", "SeriesDescription": "X",
    "AcquisitionDate": "X", "AcquisitionTime": "X", "AcquisitionDateTime": "X",
    "ContentDate": "Z", "ContentTime": "Z", "InstanceCreationDate": "X",
    "InstanceCreationTime": "X", "InstanceCoercionDateTime": "X",
    "OverlayDate": "X", "OverlayTime": "X", "CurveDate": "X", "CurveTime": "X",
    "TimezoneOffsetFromUTC": "X", "ProtocolName": "X", "AcquisitionComments": "X",
    "AcquisitionProtocolDescription": "X", "AcquisitionContextSequence": "X",
    "AcquisitionDeviceProcessingDescription": "X", "ContributionDescription": "X",
    "ReferencedStudySequence": "X", "ReferencedPerformedProcedureStepSequence": "X",
    "RequestAttributesSequence": "X", "RequestedProcedureDescription": "X",
    "RequestedProcedureID": "X", "RequestedProcedureComments": "X",
    "RequestedProcedureLocation": "X", "RequestedContrastAgent": "X",
    "ReasonForTheImagingServiceRequest": "X", "ReasonForStudy": "X",
    "ImagingServiceRequestComments": "X", "RequestingService": "X",
    "PlacerOrderNumberImagingServiceRequest": "Z",
    "FillerOrderNumberImagingServiceRequest": "Z", "OrderEnteredBy": "X",
    "OrderEntererLocation": "X", "OrderCallbackPhoneNumber": "X",
    "PerformedProcedureStepID": "X", "PerformedProcedureStepDescription": "X",
    "PerformedProcedureStepStartDate": "X", "PerformedProcedureStepStartTime": "X",
    "PerformedProcedureStepEndDate": "X", "PerformedProcedureStepEndTime": "X",
    "PerformedLocation": "X", "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepStartDate": "X", "ScheduledProcedureStepStartTime": "X",
    "ScheduledProcedureStepEndDate": "X", "ScheduledProcedureStepEndTime": "X",
    "ScheduledProcedureStepLocation": "X", "ScheduledStationAETitle": "X",
    "ScheduledStationName": "X", "ScheduledStudyLocation": "X",
    "ScheduledStudyLocationAETitle": "X", "PreMedication": "X",
    # --- institution, device, station
    "InstitutionName": "X", "InstitutionAddress": "X", "InstitutionCodeSequence": "X",
    "InstitutionalDepartmentName": "X", "StationName": "X", "DeviceSerialNumber": "X",
    "DetectorID": "X", "GantryID": "X", "GeneratorID": "X", "CassetteID": "X",
    "PlateID": "X", "ModifyingDeviceID": "X", "ModifyingDeviceManufacturer": "X",
    "DateOfLastCalibration": "X", "TimeOfLastCalibration": "X",
    "DateOfLastDetectorCalibration": "X", "TimeOfLastDetectorCalibration": "X",
    # --- physicians, operators, observers, persons
    "ReferringPhysicianName": "Z", "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X", "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X", "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X", "RequestingPhysician": "X",
    "ScheduledPerformingPhysicianName": "X",
    "ScheduledPerformingPhysicianIdentificationSequence": "X",
    "OperatorsName": "X", "OperatorIdentificationSequence": "X",
    "PhysicianApprovingInterpretation": "X", "InterpretationAuthor": "X",
    "InterpretationRecorder": "X", "InterpretationTranscriber": "X",
    "InterpretationApproverSequence": "X", "ReviewerName": "X",
    "PersonName": "D", "PersonAddress": "X", "PersonTelephoneNumbers": "X",
    "VerifyingObserverName": "D", "VerifyingOrganization": "X",
    "ContentCreatorName": "Z", "ContentCreatorIdentificationCodeSequence": "X",
    "HumanPerformerName": "X", "HumanPerformerOrganization": "X",
    "ActualHumanPerformersSequence": "X", "ScheduledHumanPerformersSequence": "X",
    "AuthorObserverSequence": "X", "ParticipantSequence": "X",
    "CustodialOrganizationSequence": "X", "NamesOfIntendedRecipientsOfResults": "X",
    "IntendedRecipientsOfResultsIdentificationSequence": "X",
    "DistributionName": "X", "DistributionAddress": "X",
    # --- free text, results, history of modifications, signatures
    "ImageComments": "X", "FrameComments": "X", "ImagePresentationComments": "X",
    "TextComments": "X", "TextString": "X",
    "IdentifyingComments": "X", "DerivationDescription": "K",
    "ModifiedImageDescription": "X", "InterpretationText": "X",
    "InterpretationDiagnosisDescription": "X", "InterpretationIDIssuer": "X",
    "Impressions": "X", "ResultsComments": "X", "ResultsIDIssuer": "X",
    "ResultsDistributionListSequence": "X", "TopicAuthor": "X", "TopicKeywords": "X",
    "TopicSubject": "X", "TopicTitle": "X", "ContentSequence": "X",
    "OriginalAttributesSequence": "X", "ModifiedAttributesSequence": "X",
    "IconImageSequence": "X", "DigitalSignaturesSequence": "X", "MAC": "X",
    "ReferencedDigitalSignatureSequence": "X", "ReferencedSOPInstanceMACSequence": "X",
    "DataSetTrailingPadding": "X",
    # --- UIDs (kept present, replaced consistently)
    "StudyInstanceUID": "U", "SeriesInstanceUID": "U", "SOPInstanceUID": "U",
    "MediaStorageSOPInstanceUID": "U", "FrameOfReferenceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U", "ReferencedFrameOfReferenceUID": "U",
    "RelatedFrameOfReferenceUID": "U", "ReferencedSOPInstanceUID": "U",
    "ReferencedSOPInstanceUIDInFile": "U", "InstanceCreatorUID": "U",
    "IrradiationEventUID": "U", "ConcatenationUID": "U", "DimensionOrganizationUID": "U",
    "DeviceUID": "U", "DoseReferenceUID": "U", "FiducialUID": "U",
    "FailedSOPInstanceUIDList": "U", "LargePaletteColorLookupTableUID": "U",
    "StorageMediaFileSetUID": "U", "TemplateExtensionCreatorUID": "U",
    "TemplateExtensionOrganizationUID": "U", "TransactionUID": "U", "UID": "U",
    "RequestedSOPInstanceUID": "U", "AffectedSOPInstanceUID": "U",
}

#: Non-zero dummy values (action ``D``) by value representation.
DUMMY_BY_VR: dict[str, str] = {
    "PN": "ANONYMIZED", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "CS": "ANONYMIZED",
    "LT": "ANONYMIZED", "ST": "ANONYMIZED", "UT": "ANONYMIZED",
    "DA": "19000101", "TM": "000000", "DT": "19000101000000",
}
