-- Conditions coded for a patient that no note of that patient affirms: coding
-- that the notes do not support, or notes that leave a diagnosis out. Patients
-- with no mention in any note are left out, since for them "never mentioned"
-- says nothing.

with

note_mentions as (

    select * from {{ source('ml', 'note_mentions') }}

),

coded_conditions as (

    select * from {{ ref('stg_fhir__conditions') }}

),

patients_with_mentions as (

    select distinct patient_key

    from note_mentions

),

affirmed_concepts as (

    select distinct
        patient_key,
        concept_system,
        concept_code

    from note_mentions

    where context = 'affirmed'

),

patient_conditions as (

    select
        coded_conditions.patient_key,
        coded_conditions.code_system,
        coded_conditions.code,
        min(coded_conditions.code_display) as code_display,
        count(*) as condition_count

    from coded_conditions
    inner join patients_with_mentions
        on coded_conditions.patient_key = patients_with_mentions.patient_key

    group by
        coded_conditions.patient_key,
        coded_conditions.code_system,
        coded_conditions.code

),

final as (

    select
        patient_conditions.patient_key,
        patient_conditions.code_system,
        patient_conditions.code,
        patient_conditions.code_display,
        patient_conditions.condition_count

    from patient_conditions
    left join affirmed_concepts
        on
            patient_conditions.patient_key = affirmed_concepts.patient_key
            and patient_conditions.code_system
            = affirmed_concepts.concept_system
            and patient_conditions.code = affirmed_concepts.concept_code

    where affirmed_concepts.patient_key is null

)

select * from final
