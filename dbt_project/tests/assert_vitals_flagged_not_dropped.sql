-- Every numeric vital sign measurement reaches the vitals mart (implausible ones flagged, not
-- dropped), and every value outside its physiological range carries the flag.
with

measurements as (
    select measurement_id
    from {{ ref('int_measurements_normalized') }}
    where
        loinc_code in (select loinc_code from {{ ref('vital_sign_ranges') }})
        and value_decimal is not null
),

vitals as (
    select * from {{ ref('vitals') }}
),

ranges as (
    select * from {{ ref('vital_sign_ranges') }}
),

dropped as (
    select measurements.measurement_id, 'dropped' as problem
    from measurements
    left join vitals on measurements.measurement_id = vitals.vital_id
    where vitals.vital_id is null
),

unflagged as (
    select vitals.vital_id, 'out of range but not flagged' as problem
    from vitals
    inner join ranges on vitals.loinc_code = ranges.loinc_code
    where
        not vitals.is_implausible
        and (
            vitals.canonical_value < ranges.plausible_low
            or vitals.canonical_value > ranges.plausible_high
        )
)

select * from dropped
union all
select * from unflagged
