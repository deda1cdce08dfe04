with

source as (
    select * from {{ source('fhir', 'organization') }}
),

flattened as (
    select
        id as organization_id,
        try_cast(json_extract_string(resource, '$.active') as boolean) as is_active,
        {{ fhir_first_code('resource', '$.type[0]') }} as type_code,
        json_extract_string(resource, '$.name') as organization_name,
        json_extract_string(resource, '$.address[0].city') as address_city,
        json_extract_string(resource, '$.address[0].state') as address_state,
        json_extract_string(resource, '$.address[0].postalCode') as address_postal_code,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
