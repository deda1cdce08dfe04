with

source as (
    select * from {{ source('fhir', 'procedure') }}
),

flattened as (
    select
        id as procedure_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.encounter', 'Encounter') }} as encounter_id,
        json_extract_string(resource, '$.status') as status,
        {{ fhir_code('resource', '$.code', 'http://snomed.info/sct') }} as snomed_code,
        coalesce(
            {{ fhir_code_display('resource', '$.code', 'http://snomed.info/sct') }},
            json_extract_string(resource, '$.code.text')
        ) as code_display,
        {{ fhir_choice_type('resource', '$', 'performed',
            ['DateTime', 'Period', 'String', 'Age', 'Range']) }} as performed_type,
        {{ fhir_timestamp(
            "coalesce(" ~ fhir_date_text('resource', '$.performedDateTime') ~ ", "
            ~ fhir_date_text('resource', '$.performedPeriod.start') ~ ")") }}
            as performed_started_at,
        {{ fhir_timestamp(fhir_date_text('resource', '$.performedPeriod.end')) }}
            as performed_ended_at,
        {{ fhir_date_precision(
            "coalesce(" ~ fhir_date_text('resource', '$.performedDateTime') ~ ", "
            ~ fhir_date_text('resource', '$.performedPeriod.start') ~ ")") }}
            as performed_started_at_precision,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
