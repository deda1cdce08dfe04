with

source as (
    select * from {{ source('fhir', 'diagnosticreport') }}
),

flattened as (
    select
        id as diagnostic_report_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.encounter', 'Encounter') }} as encounter_id,
        json_extract_string(resource, '$.status') as status,
        {{ fhir_first_code('resource', '$.category[0]') }} as category_code,
        {{ fhir_code('resource', '$.code', 'http://loinc.org') }} as loinc_code,
        coalesce(
            {{ fhir_code_display('resource', '$.code', 'http://loinc.org') }},
            json_extract_string(resource, '$.code.text')
        ) as code_display,
        {{ fhir_timestamp(
            "coalesce(" ~ fhir_date_text('resource', '$.effectiveDateTime') ~ ", "
            ~ fhir_date_text('resource', '$.effectivePeriod.start') ~ ")") }} as effective_at,
        {{ fhir_timestamp(fhir_date_text('resource', '$.issued')) }} as issued_at,
        cast(coalesce(json_array_length(resource, '$.result'), 0) as integer) as result_count,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
