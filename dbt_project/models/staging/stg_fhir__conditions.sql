with

source as (
    select * from {{ source('fhir', 'condition') }}
),

flattened as (
    select
        id as condition_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.encounter', 'Encounter') }} as encounter_id,
        {{ fhir_code('resource', '$.clinicalStatus',
            'http://terminology.hl7.org/CodeSystem/condition-clinical') }} as clinical_status,
        {{ fhir_code('resource', '$.verificationStatus',
            'http://terminology.hl7.org/CodeSystem/condition-ver-status') }}
            as verification_status,
        {{ fhir_first_code('resource', '$.category[0]') }} as category_code,
        json_extract_string(resource, '$.code.coding[0].system') as code_system,
        json_extract_string(resource, '$.code.coding[0].code') as code,
        {{ fhir_code('resource', '$.code', 'http://snomed.info/sct') }} as snomed_code,
        coalesce(
            {{ fhir_code_display('resource', '$.code', 'http://snomed.info/sct') }},
            json_extract_string(resource, '$.code.text')
        ) as code_display,
        {{ fhir_choice_type('resource', '$', 'onset',
            ['DateTime', 'Age', 'Period', 'Range', 'String']) }} as onset_type,
        {{ fhir_timestamp(
            "coalesce(" ~ fhir_date_text('resource', '$.onsetDateTime') ~ ", "
            ~ fhir_date_text('resource', '$.onsetPeriod.start') ~ ")") }} as onset_at,
        {{ fhir_date_precision(
            "coalesce(" ~ fhir_date_text('resource', '$.onsetDateTime') ~ ", "
            ~ fhir_date_text('resource', '$.onsetPeriod.start') ~ ")") }} as onset_precision,
        {{ fhir_decimal('resource', '$.onsetAge.value') }} as onset_age_value,
        {{ fhir_ucum_code('resource', '$.onsetAge') }} as onset_age_unit,
        {{ fhir_choice_type('resource', '$', 'abatement',
            ['DateTime', 'Age', 'Period', 'Range', 'String', 'Boolean']) }} as abatement_type,
        {{ fhir_timestamp(
            "coalesce(" ~ fhir_date_text('resource', '$.abatementDateTime') ~ ", "
            ~ fhir_date_text('resource', '$.abatementPeriod.end') ~ ")") }} as abated_at,
        {{ fhir_date_precision(
            "coalesce(" ~ fhir_date_text('resource', '$.abatementDateTime') ~ ", "
            ~ fhir_date_text('resource', '$.abatementPeriod.end') ~ ")") }}
            as abated_at_precision,
        {{ fhir_date_start(fhir_date_text('resource', '$.recordedDate')) }} as recorded_date,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
