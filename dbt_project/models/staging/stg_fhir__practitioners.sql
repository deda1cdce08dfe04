with

source as (
    select * from {{ source('fhir', 'practitioner') }}
),

flattened as (
    select
        id as practitioner_id,
        try_cast(json_extract_string(resource, '$.active') as boolean) as is_active,
        json_extract_string(resource, '$.gender') as gender,
        json_extract_string(resource, '$.address[0].state') as address_state,
        {{ fhir_first_code('resource', '$.qualification[0].code') }} as qualification_code,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
