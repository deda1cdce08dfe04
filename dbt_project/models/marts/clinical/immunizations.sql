with

immunizations as (
    select * from {{ ref('stg_fhir__immunizations') }}
),

final as (
    select
        immunization_id,
        patient_key,
        encounter_id,
        status,
        cvx_code,
        vaccine_display,
        occurred_at
    from immunizations
)

select * from final
