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
        'Encounter/' || encounter_id as event_source_id, patient_key, started_at as event_at,
        'encounter' as event_type, 'http://snomed.info/sct' as code_system,
        type_snomed_code as code, type_display as display
    from encounters
    union all
    select
        'Condition/' || condition_id, patient_key, onset_at, 'condition_onset',
        'http://snomed.info/sct', snomed_code, code_display
    from conditions
    union all
    select
        'Condition/' || condition_id, patient_key, abated_at, 'condition_abatement',
        'http://snomed.info/sct', snomed_code, code_display
    from conditions
    where abated_at is not null
    union all
    select
        'Observation/' || observation_id, patient_key, effective_at, 'observation',
        'http://loinc.org', loinc_code, code_display
    from observations
    union all
    select
        'MedicationRequest/' || medication_request_id, patient_key, authored_at,
        'medication_request', 'http://www.nlm.nih.gov/research/umls/rxnorm', rxnorm_code,
        medication_display
    from medications
    union all
    select
        'Procedure/' || procedure_id, patient_key, performed_started_at, 'procedure',
        'http://snomed.info/sct', snomed_code, code_display
    from procedures
    union all
    select
        'Immunization/' || immunization_id, patient_key, occurred_at, 'immunization',
        'http://hl7.org/fhir/sid/cvx', cvx_code, vaccine_display
    from immunizations
)

select * from events
where patient_key is not null and event_at is not null
