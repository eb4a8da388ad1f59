"""The service's tables: people, tokens, sessions, sign-in attempts, submissions, jobs,
results, regrades, the audit log and live workers (autograder/service/models.py).

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=False),
        sa.Column("new_value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_audit_at"), "audit", ["at"])
    op.create_table("person",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("email", sa.String(length=300), nullable=False),
        sa.Column("password_hash", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_table("regrade",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("assignment", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_table("sign_in_attempt",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("person_id", sa.String(length=100), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_sign_in_attempt_address"), "sign_in_attempt", ["address"])
    op.create_index(op.f("ix_sign_in_attempt_at"), "sign_in_attempt", ["at"])
    op.create_index(op.f("ix_sign_in_attempt_person_id"), "sign_in_attempt", ["person_id"])
    op.create_table("worker",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name")
    )
    op.create_table("api_token",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("person_id", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash")
    )
    op.create_index(op.f("ix_api_token_person_id"), "api_token", ["person_id"])
    op.create_table("submission",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("student_id", sa.String(length=100), nullable=False),
        sa.Column("assignment", sa.String(length=200), nullable=False),
        sa.Column("filename", sa.String(length=300), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("charged", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["student_id"], ["person.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_submission_student_assignment", "submission",
                    ["student_id", "assignment", "submitted_at"])
    op.create_table("web_session",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash")
    )
    op.create_index(op.f("ix_web_session_person_id"), "web_session", ["person_id"])
    op.create_table("job",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("submission_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("assignment", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("regrade_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["regrade_id"], ["regrade.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["submission_id"], ["submission.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_job_claim", "job", ["state", "id"])
    op.create_index(op.f("ix_job_regrade_id"), "job", ["regrade_id"])
    op.create_index(op.f("ix_job_submission_id"), "job", ["submission_id"])
    op.create_table("result",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.String(length=32), nullable=False),
        sa.Column("student_id", sa.String(length=100), nullable=False),
        sa.Column("assignment", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.Column("graded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["submission_id"], ["submission.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id")
    )
    op.create_index("ix_result_student_assignment", "result", ["student_id", "assignment"])
    op.create_index(op.f("ix_result_submission_id"), "result", ["submission_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_result_submission_id"), table_name="result")
    op.drop_index("ix_result_student_assignment", table_name="result")
    op.drop_table("result")
    op.drop_index(op.f("ix_job_submission_id"), table_name="job")
    op.drop_index(op.f("ix_job_regrade_id"), table_name="job")
    op.drop_index("ix_job_claim", table_name="job")
    op.drop_table("job")
    op.drop_index(op.f("ix_web_session_person_id"), table_name="web_session")
    op.drop_table("web_session")
    op.drop_index("ix_submission_student_assignment", table_name="submission")
    op.drop_table("submission")
    op.drop_index(op.f("ix_api_token_person_id"), table_name="api_token")
    op.drop_table("api_token")
    op.drop_table("worker")
    op.drop_index(op.f("ix_sign_in_attempt_person_id"), table_name="sign_in_attempt")
    op.drop_index(op.f("ix_sign_in_attempt_at"), table_name="sign_in_attempt")
    op.drop_index(op.f("ix_sign_in_attempt_address"), table_name="sign_in_attempt")
    op.drop_table("sign_in_attempt")
    op.drop_table("regrade")
    op.drop_table("person")
    op.drop_index(op.f("ix_audit_at"), table_name="audit")
    op.drop_table("audit")
