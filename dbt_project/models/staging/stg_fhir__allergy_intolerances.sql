with

source as (
    select * from {{ source('fhir', 'allergyintolerance') }}
),

flattened as (
    select
        id as allergy_intolerance_id,
        patient_key,
        {{ fhir_code('resource', '$.clinicalStatus',
            'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical') }}
            as clinical_status,
        {{ fhir_code('resource', '$.verificationStatus',
            'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification') }}
            as verification_status,
        json_extract_string(resource, '$.type') as allergy_type,
        json_extract_string(resource, '$.category[0]') as category,
        json_extract_string(resource, '$.criticality') as criticality,
        {{ fhir_code('resource', '$.code', 'http://snomed.info/sct') }} as snomed_code,
        coalesce(
            {{ fhir_code_display('resource', '$.code', 'http://snomed.info/sct') }},
            json_extract_string(resource, '$.code.text')
        ) as code_display,
        {{ fhir_timestamp(fhir_date_text('resource', '$.onsetDateTime')) }} as onset_at,
        {{ fhir_date_start(fhir_date_text('resource', '$.recordedDate')) }} as recorded_date,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
