-- Incremental: each build merges only the observations the lake wrote since the last build
-- (new and updated versions carry a newer loaded_at), then deletes the ones no longer in the
-- lake, so updates and deletes upstream are reflected without a full rebuild.
{{
    config(
        materialized='incremental',
        unique_key='observation_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        post_hook=(
            "{{ delete_rows_missing_upstream("
            "this, 'observation_id', ref('stg_fhir__observations'), 'observation_id') }}"
        )
    )
}}

with

observations as (
    select * from {{ ref('stg_fhir__observations') }}
),

already_built as (
    {% if is_incremental() %}
        select coalesce(max(built.loaded_at), timestamptz '1900-01-01') as loaded_until
        from {{ this }} as built
    {% else %}
        select timestamptz '1900-01-01' as loaded_until
    {% endif %}
),

changed as (
    select observations.*
    from observations
    inner join already_built on observations.loaded_at > already_built.loaded_until
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
    from changed
)

select * from final
