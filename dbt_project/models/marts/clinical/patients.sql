-- Patients, pseudonymized (the key, never a source id) and generalized by the privacy policy.
with

patients as (
    select * from {{ ref('stg_fhir__patients') }}
),

restricted_zip3 as (
    select * from {{ ref('restricted_zip3') }}
),

{% set safe_harbor = var('privacy_policy') == 'safe_harbor' %}

generalized as (
    select
        patients.patient_key,
        patients.gender,
        {% if safe_harbor %}
        cast(null as date) as birth_date,
        {% else %}
        patients.birth_date,
        {% endif %}
        cast(extract(year from patients.birth_date) as integer) as birth_year,
        cast(
            date_diff(
                'year', patients.birth_date,
                coalesce(cast(patients.deceased_at as date), current_date)
            ) as integer
        ) as age_years,
        patients.is_deceased,
        {% if safe_harbor %}
        cast(null as date) as deceased_date,
        {% else %}
        cast(patients.deceased_at as date) as deceased_date,
        {% endif %}
        patients.race_code,
        patients.ethnicity_code,
        patients.address_state,
        case
            when patients.address_postal_code is null then null
            {% if safe_harbor %}
            when restricted_zip3.zip3 is not null then '000'
            {% endif %}
            else left(patients.address_postal_code, 3)
        end as zip3
    from patients
    left join restricted_zip3 on left(patients.address_postal_code, 3) = restricted_zip3.zip3
),

final as (
    select
        patient_key,
        gender,
        birth_date,
        birth_year,
        {% if safe_harbor %}
        case when age_years > 89 then 90 else age_years end as age_years,
        {% else %}
        age_years,
        {% endif %}
        is_deceased,
        deceased_date,
        race_code,
        ethnicity_code,
        address_state,
        zip3
    from generalized
)

select * from final
