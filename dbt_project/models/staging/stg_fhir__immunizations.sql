with

source as (
    select * from {{ source('fhir', 'immunization') }}
),

flattened as (
    select
        id as immunization_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.encounter', 'Encounter') }} as encounter_id,
        json_extract_string(resource, '$.status') as status,
        {{ fhir_code('resource', '$.vaccineCode', 'http://hl7.org/fhir/sid/cvx') }} as cvx_code,
        coalesce(
            {{ fhir_code_display('resource', '$.vaccineCode', 'http://hl7.org/fhir/sid/cvx') }},
            json_extract_string(resource, '$.vaccineCode.text')
        ) as vaccine_display,
        {{ fhir_timestamp(fhir_date_text('resource', '$.occurrenceDateTime')) }} as occurred_at,
        {{ fhir_date_precision(fhir_date_text('resource', '$.occurrenceDateTime')) }}
            as occurred_at_precision,
        try_cast(json_extract_string(resource, '$.primarySource') as boolean)
            as is_primary_source,
        {{ fhir_first_code('resource', '$.statusReason') }} as status_reason_code,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
