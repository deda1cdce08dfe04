with

source as (
    select * from {{ source('fhir', 'observation') }}
),

flattened as (
    select
        id as observation_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.encounter', 'Encounter') }} as encounter_id,
        json_extract_string(resource, '$.status') as status,
        {{ fhir_code('resource', '$.category[*]',
            'http://terminology.hl7.org/CodeSystem/observation-category') }} as category_code,
        {{ fhir_code('resource', '$.code', 'http://loinc.org') }} as loinc_code,
        coalesce(
            {{ fhir_code_display('resource', '$.code', 'http://loinc.org') }},
            json_extract_string(resource, '$.code.text')
        ) as code_display,
        {{ fhir_choice_type('resource', '$', 'effective',
            ['DateTime', 'Period', 'Instant', 'Timing']) }} as effective_type,
        {{ fhir_timestamp(
            "coalesce(" ~ fhir_date_text('resource', '$.effectiveDateTime') ~ ", "
            ~ fhir_date_text('resource', '$.effectiveInstant') ~ ", "
            ~ fhir_date_text('resource', '$.effectivePeriod.start') ~ ")") }} as effective_at,
        {{ fhir_date_precision(
            "coalesce(" ~ fhir_date_text('resource', '$.effectiveDateTime') ~ ", "
            ~ fhir_date_text('resource', '$.effectiveInstant') ~ ", "
            ~ fhir_date_text('resource', '$.effectivePeriod.start') ~ ")") }}
            as effective_at_precision,
        {{ fhir_timestamp(fhir_date_text('resource', '$.issued')) }} as issued_at,
        {{ fhir_choice_type('resource', '$', 'value',
            ['Quantity', 'CodeableConcept', 'String', 'Boolean', 'Integer', 'Range', 'Ratio',
             'SampledData', 'Time', 'DateTime', 'Period']) }} as value_type,
        coalesce(
            {{ fhir_decimal('resource', '$.valueQuantity.value') }},
            {{ fhir_decimal('resource', '$.valueInteger') }}
        ) as value_decimal,
        json_extract_string(resource, '$.valueQuantity.unit') as value_unit,
        {{ fhir_ucum_code('resource', '$.valueQuantity') }} as value_ucum_code,
        json_extract_string(resource, '$.valueQuantity.comparator') as value_comparator,
        {{ fhir_first_code('resource', '$.valueCodeableConcept') }} as value_code,
        json_extract_string(resource, '$.valueString') as value_string,
        try_cast(json_extract_string(resource, '$.valueBoolean') as boolean) as value_boolean,
        cast(coalesce(json_array_length(resource, '$.component'), 0) as integer) as component_count,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
