with

source as (
    select * from {{ source('fhir', 'location') }}
),

flattened as (
    select
        id as location_id,
        json_extract_string(resource, '$.status') as status,
        json_extract_string(resource, '$.name') as location_name,
        {{ fhir_reference_id('resource', '$.managingOrganization', 'Organization') }}
            as managing_organization_id,
        json_extract_string(resource, '$.address.city') as address_city,
        json_extract_string(resource, '$.address.state') as address_state,
        json_extract_string(resource, '$.address.postalCode') as address_postal_code,
        {{ fhir_decimal('resource', '$.position.latitude') }} as latitude,
        {{ fhir_decimal('resource', '$.position.longitude') }} as longitude,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
