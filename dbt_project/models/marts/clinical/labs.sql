-- Laboratory results: numeric ones in canonical units, coded ones by their code.
with

measurements as (
    select * from {{ ref('int_measurements_normalized') }}
),

final as (
    select
        measurement_id as lab_id,
        observation_id,
        patient_key,
        encounter_id,
        loinc_code,
        code_display,
        effective_at as resulted_at,
        canonical_value,
        canonical_ucum_code,
        value_code
    from measurements
    where category_code = 'laboratory'
)

select * from final
