-- Worked example: patients with essential hypertension and whether their latest blood pressure
-- is under control (below 140/90 mm[Hg]).
with

conditions as (
    select * from {{ ref('conditions') }}
),

vitals as (
    select * from {{ ref('vitals') }}
),

diagnoses as (
    select
        patient_key,
        min(onset_at) as hypertension_onset_at
    from conditions
    where snomed_code in ('38341003', '59621000')
    group by patient_key
),

readings as (
    select
        patient_key,
        observation_id,
        measured_at,
        max(case when loinc_code = '8480-6' then canonical_value end) as systolic,
        max(case when loinc_code = '8462-4' then canonical_value end) as diastolic
    from vitals
    where loinc_code in ('8480-6', '8462-4') and not is_implausible
    group by patient_key, observation_id, measured_at
),

latest as (
    select
        patient_key,
        count(*) as bp_reading_count,
        arg_max(systolic, measured_at) as latest_systolic_mm_hg,
        arg_max(diastolic, measured_at) as latest_diastolic_mm_hg,
        max(measured_at) as latest_bp_at
    from readings
    group by patient_key
),

final as (
    select
        diagnoses.patient_key,
        diagnoses.hypertension_onset_at,
        cast(coalesce(latest.bp_reading_count, 0) as integer) as bp_reading_count,
        latest.latest_systolic_mm_hg,
        latest.latest_diastolic_mm_hg,
        latest.latest_bp_at,
        latest.latest_systolic_mm_hg < 140
        and latest.latest_diastolic_mm_hg < 90 as is_bp_controlled
    from diagnoses
    left join latest on diagnoses.patient_key = latest.patient_key
)

select * from final
