-- Worked example: patients with diabetes mellitus type 2 and whether their latest HbA1c is
-- under control (below 7 %, the ADA's general target).
with

conditions as (
    select * from {{ ref('conditions') }}
),

labs as (
    select * from {{ ref('labs') }}
),

diagnoses as (
    select
        patient_key,
        min(onset_at) as diabetes_onset_at
    from conditions
    where snomed_code in ('44054006')
    group by patient_key
),

hba1c as (
    select
        patient_key,
        count(*) as hba1c_count,
        arg_max(canonical_value, resulted_at) as latest_hba1c_percent,
        max(resulted_at) as latest_hba1c_at
    from labs
    where
        loinc_code in ('4548-4', '17856-6')
        and canonical_ucum_code = '%'
        and canonical_value is not null
    group by patient_key
),

final as (
    select
        diagnoses.patient_key,
        diagnoses.diabetes_onset_at,
        cast(coalesce(hba1c.hba1c_count, 0) as integer) as hba1c_count,
        hba1c.latest_hba1c_percent,
        hba1c.latest_hba1c_at,
        hba1c.latest_hba1c_percent < 7 as is_hba1c_controlled
    from diagnoses
    left join hba1c on diagnoses.patient_key = hba1c.patient_key
)

select * from final
