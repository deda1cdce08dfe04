-- Every dated clinical event of a patient, one shape for all resource types.
with

encounters as (
    select * from {{ ref('stg_fhir__encounters') }}
),

conditions as (
    select * from {{ ref('stg_fhir__conditions') }}
),

observations as (
    select * from {{ ref('stg_fhir__observations') }}
),

medications as (
    select * from {{ ref('stg_fhir__medication_requests') }}
),

procedures as (
    select * from {{ ref('stg_fhir__procedures') }}
),

immunizations as (
    select * from {{ ref('stg_fhir__immunizations') }}
),

events as (
    select
        patient_key,
        started_at as event_at,
        'encounter' as event_type,
        'Encounter/' || encounter_id as event_source_id,
        'http://snomed.info/sct' as code_system,
        type_snomed_code as code,
        type_display as display
    from encounters
    union all
    select
        patient_key,
        onset_at as event_at,
        'condition_onset' as event_type,
        'Condition/' || condition_id as event_source_id,
        'http://snomed.info/sct' as code_system,
        snomed_code as code,
        code_display as display
    from conditions
    union all
    select
        patient_key,
        abated_at as event_at,
        'condition_abatement' as event_type,
        'Condition/' || condition_id as event_source_id,
        'http://snomed.info/sct' as code_system,
        snomed_code as code,
        code_display as display
    from conditions
    where abated_at is not null
    union all
    select
        patient_key,
        effective_at as event_at,
        'observation' as event_type,
        'Observation/' || observation_id as event_source_id,
        'http://loinc.org' as code_system,
        loinc_code as code,
        code_display as display
    from observations
    union all
    select
        patient_key,
        authored_at as event_at,
        'medication_request' as event_type,
        'MedicationRequest/' || medication_request_id as event_source_id,
        'http://www.nlm.nih.gov/research/umls/rxnorm' as code_system,
        rxnorm_code as code,
        medication_display as display
    from medications
    union all
    select
        patient_key,
        performed_started_at as event_at,
        'procedure' as event_type,
        'Procedure/' || procedure_id as event_source_id,
        'http://snomed.info/sct' as code_system,
        snomed_code as code,
        code_display as display
    from procedures
    union all
    select
        patient_key,
        occurred_at as event_at,
        'immunization' as event_type,
        'Immunization/' || immunization_id as event_source_id,
        'http://hl7.org/fhir/sid/cvx' as code_system,
        cvx_code as code,
        vaccine_display as display
    from immunizations
),

dated as (
    select * from events
    where patient_key is not null and event_at is not null
)

select * from dated
