-- Measurements in canonical UCUM units, where a linear conversion is known.
with

measurements as (
    select * from {{ ref('int_measurements_unioned') }}
),

conversions as (
    select * from {{ ref('unit_conversions') }}
),

normalized as (
    select
        measurements.*,
        coalesce(conversions.to_ucum_code, measurements.value_ucum_code) as canonical_ucum_code,
        case
            when conversions.from_ucum_code is null then measurements.value_decimal
            else cast(
                    measurements.value_decimal * conversions.multiply_by + conversions.then_add
                    as decimal(18, 6)
                )
        end as canonical_value
    from measurements
    left join conversions on measurements.value_ucum_code = conversions.from_ucum_code
)

select * from normalized
