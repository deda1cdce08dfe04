with

source as (
    select * from {{ source('fhir', 'claim') }}
),

flattened as (
    select
        id as claim_id,
        patient_key,
        json_extract_string(resource, '$.status') as status,
        {{ fhir_first_code('resource', '$.type') }} as type_code,
        json_extract_string(resource, '$.use') as claim_use,
        {{ fhir_timestamp(fhir_date_text('resource', '$.created')) }} as created_at,
        {{ fhir_timestamp(fhir_date_text('resource', '$.billablePeriod.start')) }}
            as billable_started_at,
        {{ fhir_timestamp(fhir_date_text('resource', '$.billablePeriod.end')) }}
            as billable_ended_at,
        {{ fhir_reference_id('resource', '$.provider', 'Organization') }}
            as provider_organization_id,
        {{ fhir_reference_id('resource', '$.item[0].encounter[0]', 'Encounter') }}
            as encounter_id,
        {{ fhir_decimal('resource', '$.total.value') }} as total_amount,
        json_extract_string(resource, '$.total.currency') as total_currency,
        cast(coalesce(json_array_length(resource, '$.item'), 0) as integer) as item_count,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
