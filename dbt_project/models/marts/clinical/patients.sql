-- Patients, pseudonymized (the key, never a source id) and generalized by the privacy policy:
-- under safe_harbor, dates of birth and death are removed (the year stays), ages over 89 read 90
-- and ZIP3s of sparsely populated areas read 000.
{% set is_safe_harbor = 'true' if var('privacy_policy') == 'safe_harbor' else 'false' %}

with

patients as (
    select * from {{ ref('stg_fhir__patients') }}
),

restricted_zip3 as (
    select * from {{ ref('restricted_zip3') }}
),

aged as (
    select
        patients.*,
        left(patients.address_postal_code, 3) as postal_zip3,
        cast(
            date_diff(
                'year', patients.birth_date,
                coalesce(cast(patients.deceased_at as date), current_date)
            ) as integer
        ) as exact_age_years
    from patients
),

generalized as (
    select
        aged.patient_key,
        aged.gender,
        case when not {{ is_safe_harbor }} then aged.birth_date end as birth_date,
        cast(extract(year from aged.birth_date) as integer) as birth_year,
        case
            when {{ is_safe_harbor }} and aged.exact_age_years > 89 then 90
            else aged.exact_age_years
        end as age_years,
        aged.is_deceased,
        case when not {{ is_safe_harbor }} then cast(aged.deceased_at as date) end
            as deceased_date,
        aged.race_code,
        aged.ethnicity_code,
        aged.address_state,
        case
            when {{ is_safe_harbor }} and restricted_zip3.zip3 is not null then '000'
            else aged.postal_zip3
        end as zip3
    from aged
    left join restricted_zip3 on aged.postal_zip3 = restricted_zip3.zip3
)

select * from generalized
