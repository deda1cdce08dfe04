{% set us_core = 'http://hl7.org/fhir/us/core/StructureDefinition/' %}

with

source as (
    select * from {{ source('fhir', 'patient') }}
),

flattened as (
    select
        patient_key,
        json_extract_string(resource, '$.gender') as gender,
        {{ fhir_date_start(fhir_date_text('resource', '$.birthDate')) }} as birth_date,
        {{ fhir_date_precision(fhir_date_text('resource', '$.birthDate')) }}
            as birth_date_precision,
        coalesce(
            try_cast(json_extract_string(resource, '$.deceasedBoolean') as boolean),
            json_exists(resource, '$.deceasedDateTime')
        ) as is_deceased,
        {{ fhir_timestamp(fhir_date_text('resource', '$.deceasedDateTime')) }} as deceased_at,
        {{ fhir_extension_value(
            fhir_extension('resource', us_core ~ 'us-core-race'),
            'ombCategory', 'valueCoding.code') }} as race_code,
        {{ fhir_extension_value(
            fhir_extension('resource', us_core ~ 'us-core-ethnicity'),
            'ombCategory', 'valueCoding.code') }} as ethnicity_code,
        {{ fhir_extension_value(
            'resource', us_core ~ 'us-core-birthsex',
            'valueCode') }} as birth_sex,
        json_extract_string(resource, '$.address[0].state') as address_state,
        json_extract_string(resource, '$.address[0].postalCode') as address_postal_code,
        json_extract_string(resource, '$.address[0].country') as address_country,
        {{ fhir_first_code('resource', '$.maritalStatus') }} as marital_status_code,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
