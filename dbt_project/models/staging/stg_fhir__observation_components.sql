with

source as (
    select * from {{ source('fhir', 'observation') }}
),

components as (
    select
        id as observation_id,
        patient_key,
        loaded_at,
        unnest(json_extract(resource, '$.component[*]')) as component,
        generate_subscripts(json_extract(resource, '$.component[*]'), 1) as component_index
    from source
    where json_array_length(resource, '$.component') > 0
),

flattened as (
    select
        observation_id || '#' || component_index as observation_component_id,
        observation_id,
        component_index,
        patient_key,
        {{ fhir_code('component', '$.code', 'http://loinc.org') }} as loinc_code,
        coalesce(
            {{ fhir_code_display('component', '$.code', 'http://loinc.org') }},
            json_extract_string(component, '$.code.text')
        ) as code_display,
        {{ fhir_choice_type('component', '$', 'value',
            ['Quantity', 'CodeableConcept', 'String', 'Boolean', 'Integer', 'Range', 'Ratio',
             'SampledData', 'Time', 'DateTime', 'Period']) }} as value_type,
        {{ fhir_decimal('component', '$.valueQuantity.value') }} as value_decimal,
        json_extract_string(component, '$.valueQuantity.unit') as value_unit,
        {{ fhir_ucum_code('component', '$.valueQuantity') }} as value_ucum_code,
        {{ fhir_first_code('component', '$.valueCodeableConcept') }} as value_code,
        loaded_at
    from components
)

select * from flattened
