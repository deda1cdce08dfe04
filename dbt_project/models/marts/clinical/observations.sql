-- Incremental: each build merges only the observations the lake wrote since the last build
-- (new and updated versions carry a newer loaded_at), then deletes the ones no longer in the
-- lake, so updates and deletes upstream are reflected without a full rebuild.
{{
    config(
        materialized='incremental',
        unique_key='observation_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        post_hook="{{ delete_rows_missing_upstream(this, 'observation_id', ref('stg_fhir__observations'), 'observation_id') }}"
    )
}}

with

observations as (
    select * from {{ ref('stg_fhir__observations') }}
    {% if is_incremental() %}
    where loaded_at > (select coalesce(max(loaded_at), timestamptz '1900-01-01') from {{ this }})
    {% endif %}
),

final as (
    select
        observation_id,
        patient_key,
        encounter_id,
        status,
        category_code,
        loinc_code,
        code_display,
        effective_at,
        effective_at_precision,
        value_type,
        value_decimal,
        value_ucum_code,
        value_code,
        component_count,
        loaded_at
    from observations
)

select * from final
