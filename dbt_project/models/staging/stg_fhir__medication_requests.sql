with

source as (
    select * from {{ source('fhir', 'medicationrequest') }}
),

flattened as (
    select
        id as medication_request_id,
        patient_key,
        {{ fhir_reference_id('resource', '$.encounter', 'Encounter') }} as encounter_id,
        json_extract_string(resource, '$.status') as status,
        json_extract_string(resource, '$.intent') as intent,
        {{ fhir_choice_type('resource', '$', 'medication', ['CodeableConcept', 'Reference']) }}
            as medication_type,
        {{ fhir_code('resource', '$.medicationCodeableConcept',
            'http://www.nlm.nih.gov/research/umls/rxnorm') }} as rxnorm_code,
        coalesce(
            {{ fhir_code_display('resource', '$.medicationCodeableConcept',
                'http://www.nlm.nih.gov/research/umls/rxnorm') }},
            json_extract_string(resource, '$.medicationCodeableConcept.text')
        ) as medication_display,
        {{ fhir_reference_id('resource', '$.medicationReference', 'Medication') }}
            as medication_id,
        {{ fhir_timestamp(fhir_date_text('resource', '$.authoredOn')) }} as authored_at,
        {{ fhir_reference_id('resource', '$.requester', 'Practitioner') }}
            as requester_practitioner_id,
        {{ fhir_reference_id('resource', '$.reasonReference[0]', 'Condition') }}
            as reason_condition_id,
        last_updated as last_updated_at,
        loaded_at
    from source
)

select * from flattened
