-- Every numeric measurement: an observation's own value, and each component of a panel (blood
-- pressure readings are components of one observation), with the parent's context.
with

observations as (
    select * from {{ ref('stg_fhir__observations') }}
),

components as (
    select * from {{ ref('stg_fhir__observation_components') }}
),

observation_values as (
    select
        observation_id as measurement_id,
        observation_id,
        patient_key,
        encounter_id,
        status,
        category_code,
        loinc_code,
        code_display,
        effective_at,
        value_decimal,
        value_ucum_code,
        value_unit,
        value_code
    from observations
    where value_type in ('Quantity', 'Integer', 'CodeableConcept')
),

component_values as (
    select
        components.observation_component_id as measurement_id,
        components.observation_id,
        components.patient_key,
        observations.encounter_id,
        observations.status,
        observations.category_code,
        components.loinc_code,
        components.code_display,
        observations.effective_at,
        components.value_decimal,
        components.value_ucum_code,
        components.value_unit,
        components.value_code
    from components
    inner join observations on components.observation_id = observations.observation_id
    where components.value_type in ('Quantity', 'Integer', 'CodeableConcept')
),

unioned as (
    select * from observation_values
    union all
    select * from component_values
)

select * from unioned
