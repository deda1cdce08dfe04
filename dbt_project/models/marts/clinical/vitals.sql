-- Vital signs in canonical units; an implausible value is flagged, never dropped.
with

measurements as (
    select * from {{ ref('int_measurements_normalized') }}
),

ranges as (
    select * from {{ ref('vital_sign_ranges') }}
),

final as (
    select
        measurements.measurement_id as vital_id,
        measurements.observation_id,
        measurements.patient_key,
        measurements.encounter_id,
        measurements.loinc_code,
        ranges.vital_name,
        measurements.effective_at as measured_at,
        measurements.canonical_value,
        measurements.canonical_ucum_code,
        measurements.value_decimal as recorded_value,
        measurements.value_ucum_code as recorded_ucum_code,
        coalesce(
            measurements.canonical_ucum_code <> ranges.canonical_ucum_code
            or measurements.canonical_value not between ranges.plausible_low
            and ranges.plausible_high,
            true
        ) as is_implausible
    from measurements
    inner join ranges on measurements.loinc_code = ranges.loinc_code
    where measurements.value_decimal is not null
)

select * from final
