with

source as (
    select * from {{ source('fhir', 'explanationofbenefit') }}
),

flattened as (
    select
        id as explanation_of_benefit_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.claim', 'Claim') }} as claim_id,
        json_extract_string(resource, '$.status') as status,
        {{ fhir_first_code('resource', '$.type') }} as type_code,
        json_extract_string(resource, '$.outcome') as outcome,
        {{ fhir_timestamp(fhir_date_text('resource', '$.created')) }} as created_at,
        {{ fhir_timestamp(fhir_date_text('resource', '$.billablePeriod.start')) }}
            as billable_started_at,
        {{ fhir_timestamp(fhir_date_text('resource', '$.billablePeriod.end')) }}
            as billable_ended_at,
        {{ fhir_decimal('resource', '$.payment.amount.value') }} as payment_amount,
        {{ fhir_decimal('resource', '$.total[0].amount.value') }} as total_amount,
        json_extract_string(resource, '$.total[0].amount.currency') as total_currency,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
