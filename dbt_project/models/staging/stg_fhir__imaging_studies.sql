with

source as (
    select * from {{ source('fhir', 'imagingstudy') }}
),

flattened as (
    select
        id as imaging_study_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.encounter', 'Encounter') }} as encounter_id,
        json_extract_string(resource, '$.status') as status,
        {{ fhir_timestamp(fhir_date_text('resource', '$.started')) }} as started_at,
        try_cast(json_extract_string(resource, '$.numberOfSeries') as integer)
            as number_of_series,
        try_cast(json_extract_string(resource, '$.numberOfInstances') as integer)
            as number_of_instances,
        json_extract_string(resource, '$.series[0].modality.code') as modality_code,
        json_extract_string(resource, '$.series[0].bodySite.code') as body_site_snomed_code,
        json_extract_string(resource, '$.series[0].bodySite.display') as body_site_display,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
