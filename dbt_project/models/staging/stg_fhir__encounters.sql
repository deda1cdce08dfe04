with

source as (
    select * from {{ source('fhir', 'encounter') }}
),

flattened as (
    select
        id as encounter_id,
        patient_key,
        json_extract_string(resource, '$.status') as status,
        json_extract_string(resource, '$.class.code') as class_code,
        {{ fhir_code('resource', '$.type[*]', 'http://snomed.info/sct') }} as type_snomed_code,
        {{ fhir_code_display('resource', '$.type[*]', 'http://snomed.info/sct') }}
            as type_display,
        {{ fhir_code('resource', '$.reasonCode[*]', 'http://snomed.info/sct') }}
            as reason_snomed_code,
        {{ fhir_timestamp(fhir_date_text('resource', '$.period.start')) }} as started_at,
        {{ fhir_timestamp(fhir_date_text('resource', '$.period.end')) }} as ended_at,
        {{ fhir_date_precision(fhir_date_text('resource', '$.period.start')) }}
            as started_at_precision,
        {{ fhir_reference_id('resource', '$.serviceProvider', 'Organization') }}
            as service_provider_organization_id,
        {{ fhir_reference_id('resource', '$.location[0].location', 'Location') }} as location_id,
        {{ fhir_reference_id('resource', '$.participant[0].individual', 'Practitioner') }}
            as practitioner_id,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
