with

source as (
    select * from {{ source('fhir', 'careplan') }}
),

flattened as (
    select
        id as care_plan_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.encounter', 'Encounter') }} as encounter_id,
        json_extract_string(resource, '$.status') as status,
        json_extract_string(resource, '$.intent') as intent,
        {{ fhir_code('resource', '$.category[*]', 'http://snomed.info/sct') }}
            as category_snomed_code,
        {{ fhir_code_display('resource', '$.category[*]', 'http://snomed.info/sct') }}
            as category_display,
        {{ fhir_timestamp(fhir_date_text('resource', '$.period.start')) }} as started_at,
        {{ fhir_timestamp(fhir_date_text('resource', '$.period.end')) }} as ended_at,
        cast(coalesce(json_array_length(resource, '$.activity'), 0) as integer) as activity_count,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
