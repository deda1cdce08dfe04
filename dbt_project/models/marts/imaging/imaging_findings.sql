-- One row per image and pathology from the newest run of each model, and one row per image that
-- has no result (skipped, or never scored) carrying the reason. An instance an ImagingStudy lists
-- without a file gives way to the imported file of that instance.

with

images as (

    select * from {{ source('ml', 'images') }}

),

stored_instances as (

    select distinct
        patient_key,
        sop_instance_uid
    from images
    where storage_path is not null and sop_instance_uid is not null

),

kept_images as (

    select images.*
    from images
    left join stored_instances
        on
            images.patient_key = stored_instances.patient_key
            and images.sop_instance_uid = stored_instances.sop_instance_uid
    where images.storage_path is not null or stored_instances.sop_instance_uid is null

),

findings as (

    select * from {{ source('ml', 'imaging_findings') }}

),

runs as (

    select distinct
        image_id,
        model_id,
        run_id,
        scored_at
    from findings

),

newest_runs as (

    -- a later run of the same model (new weights, say) replaces the earlier findings
    select
        image_id,
        model_id,
        run_id
    from runs
    qualify row_number() over (
        partition by image_id, model_id
        order by scored_at desc, run_id desc
    ) = 1

),

newest_findings as (

    select findings.*
    from findings
    inner join newest_runs
        on
            findings.image_id = newest_runs.image_id
            and findings.run_id = newest_runs.run_id

),

final as (

    select
        kept_images.image_id,
        kept_images.patient_key,
        kept_images.series_instance_uid,
        kept_images.sop_instance_uid,
        kept_images.modality,
        kept_images.body_part,
        kept_images.view_position,
        kept_images.content_type,
        newest_findings.pathology,
        newest_findings.probability,
        newest_findings.threshold,
        newest_findings.is_above_threshold,
        newest_findings.model_id,
        newest_findings.weights_sha256,
        newest_findings.run_id,
        newest_findings.scored_at,
        kept_images.imported_at,
        coalesce(
            kept_images.study_instance_uid, newest_findings.study_instance_uid
        ) as study_instance_uid,
        coalesce(newest_findings.status, 'not scored') as status,
        case
            when newest_findings.image_id is null
                then 'not scored yet: the vision stage has not run with weights in place'
            else newest_findings.reason
        end as reason,
        newest_findings.status = 'scored' as has_result
    from kept_images
    left join newest_findings
        on kept_images.image_id = newest_findings.image_id

)

select * from final
