with

source as (
    select * from {{ source('fhir', 'documentreference') }}
),

flattened as (
    select
        id as document_reference_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.context.encounter[0]', 'Encounter') }}
            as encounter_id,
        json_extract_string(resource, '$.status') as status,
        {{ fhir_code('resource', '$.type', 'http://loinc.org') }} as type_loinc_code,
        coalesce(
            {{ fhir_code_display('resource', '$.type', 'http://loinc.org') }},
            json_extract_string(resource, '$.type.text')
        ) as type_display,
        {{ fhir_first_code('resource', '$.category[0]') }} as category_code,
        {{ fhir_timestamp(fhir_date_text('resource', '$.date')) }} as dated_at,
        json_extract_string(resource, '$.content[0].attachment.contentType') as content_type,
        json_exists(resource, '$.content[0].attachment.data') as has_inline_data,
        cast(coalesce(json_array_length(resource, '$.content'), 0) as integer) as content_count,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
